"""Results: collect every job's metrics into long tables, summarise over seeds, render."""
