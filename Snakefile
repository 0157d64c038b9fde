# vldistill: one DAG from data to the results table.
# Run: snakemake --cores all            (the default target below)
# Stages live in rules/*.smk, one file per stage; logic lives in src/vldistill.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/data.smk"
include: "rules/teacher.smk"
include: "rules/student.smk"
include: "rules/finetune.smk"
include: "rules/retrieval.smk"
include: "rules/shortcuts.smk"
include: "rules/report.smk"
include: "rules/targets.smk"


# Gathers, reports and named targets: seconds of work, so on a cluster they run on the submitting
# node instead of waiting in the queue (profiles/slurm). Downloads too: compute nodes often have no
# route to the internet.
localrules:
    all,
    download,
    check_manual,
    data_all,
    features_all,
    models_all,
    indexes_all,
    teacher_index,
    finetune_report,
    retrieval_report,
    results_table,
    training_curves,
    retrieval_panel,


# The default target: the results table (which needs every fine-tuning job and, when the config
# has a `retrieval` section, every retrieval result), its plots and figures (training curves,
# retrieval panels), and both teacher caches.
rule all:
    default_target: True
    input:
        rules.results_table.output,
        # both teacher caches (for clips: per sampled frame)
        expand(
            "features/{dataset}/{modality}-{teacher}/index.parquet",
            zip,
            dataset=[DATASET] * 2,
            modality=["vision", "text"],
            teacher=[teacher_name("vision"), teacher_name("text")],
        ),


# Set on every scripted rule in one place, kept last so it sees every rule defined above:
# - code: Snakemake's code trigger sees a rule's script but not the src/ modules it imports, so
#   each rule also carries a hash of those modules as a param (src/vldistill/code_version.py);
#   the params trigger then re-runs exactly the rules whose code changed.
# - conda: the software environment for `--sdm conda` (config `conda_env`: envs/cpu.yaml or
#   envs/gpu.yaml); every rule runs in the same one, so it is chosen once, not per rule.
CONDA_ENV = str(Path(workflow.basedir) / "envs" / f"{config['conda_env']}.yaml")
for _rule in workflow.rules:
    if _rule.script is not None:
        _rule.set_params(code=code_hash(Path(workflow.basedir) / "scripts" / Path(_rule.script).name))
        _rule.conda_env = CONDA_ENV
