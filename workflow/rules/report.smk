rule report:
    input:
        manifest=results("manifest.parquet"),
        models=results("models.json"),
        evaluation=results("evaluation.json"),
        tables=expand(
            results("evaluation/{table}.parquet"), table=stages.evaluate.TABLES
        ),
    output:
        card=report(
            results("dataset_card.json"),
            caption="../report/dataset_card.rst",
            category="1. Dataset",
        ),
        samples=report(
            results("samples.png"),
            caption="../report/samples.rst",
            category="1. Dataset",
        ),
        certificate=report(
            results("report/certificate.csv"),
            caption="../report/certificate.rst",
            category="2. Certificate",
        ),
        figures=[
            report(
                results(f"report/{figure}.png"),
                caption=f"../report/{figure}.rst",
                category="2. Certificate",
            )
            for figure in stages.report.FIGURES
        ],
    log:
        results("logs/report.log"),
    benchmark:
        results("benchmarks/report.tsv")
    conda:
        "../../envs/cpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings(stages.report),
        results=lambda wildcards, output: os.path.dirname(output.card),
        figures=lambda wildcards, output: os.path.dirname(output.certificate),
    shell:
        "python -m digi2real report --config {params.config:q} --results {params.results}"
        " --manifest {input.manifest} --models {input.models} --evaluation {input.evaluation}"
        " --out {output.card} --samples {output.samples} --figures {params.figures}"
        " > {log} 2>&1"
