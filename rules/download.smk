# Raw inputs of the real datasets: public files fetched and verified (config `downloads`), and
# gated data the user places by hand (config `manual`). Without those keys nothing here is in the
# DAG. Logic: src/vldistill/data/download.py.


if _CLASHES:
    raise WorkflowError(
        f"downloads/manual: these names would write the same path under data/<dataset>/raw/: "
        f"{_CLASHES}; rename one of each"
    )


rule download:
    """Fetch one public file (config downloads.<name>): resumable, retried, sha256-verified and
    renamed into place only when verified."""
    output:
        "data/{dataset}/raw/{name}",
    wildcard_constraints:
        name=_names_pattern(DOWNLOADS),
    params:
        url=lambda wc: DOWNLOADS[wc.name]["url"],
        sha256=lambda wc: DOWNLOADS[wc.name]["sha256"],
    log:
        "logs/{dataset}/download/{name}.log",
    benchmark:
        "benchmarks/runs/{dataset}/download/{name}.tsv"
    resources:
        mem_mb=500,
        runtime=360,  # minutes: the largest archives (COCO images) are tens of GB
    script:
        "../scripts/download.py"


rule extract:
    """Unpack a downloaded zip or tar (downloads.<name>.extract: true) into <name>.d/, all or
    nothing; members that would escape the directory are refused."""
    input:
        "data/{dataset}/raw/{name}",
    output:
        directory("data/{dataset}/raw/{name}.d"),
    wildcard_constraints:
        name=_names_pattern(n for n, entry in DOWNLOADS.items() if entry.get("extract")),
    log:
        "logs/{dataset}/extract/{name}.log",
    benchmark:
        "benchmarks/runs/{dataset}/extract/{name}.tsv"
    resources:
        mem_mb=1000,
        runtime=120,
    script:
        "../scripts/extract.py"


rule check_manual:
    """Check gated data placed by hand (config manual.<name>); fail saying exactly where it
    belongs and where to request it. The pipeline never downloads it."""
    output:
        "data/{dataset}/raw/{name}.placed.json",
    wildcard_constraints:
        name=_names_pattern(MANUAL),
    params:
        path=lambda wc: MANUAL[wc.name]["path"],
        what=lambda wc: MANUAL[wc.name]["what"],
        request=lambda wc: MANUAL[wc.name]["request"],
        min_files=lambda wc: MANUAL[wc.name].get("min_files", 1),
    log:
        "logs/{dataset}/check_manual/{name}.log",
    benchmark:
        "benchmarks/runs/{dataset}/check_manual/{name}.tsv"
    resources:
        mem_mb=500,
        runtime=10,
    script:
        "../scripts/check_manual.py"
