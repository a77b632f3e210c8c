rule report:
    input:
        manifest=results("manifest.parquet"),
        models=results("models.json"),
    output:
        card=report(results("dataset_card.json"), caption="../report/dataset_card.rst"),
        samples=report(results("samples.png"), caption="../report/samples.rst"),
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
        results=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "python -m digi2real report --config {params.config:q} --results {params.results}"
        " --manifest {input.manifest} --models {input.models} --out {output.card}"
        " --samples {output.samples} > {log} 2>&1"
