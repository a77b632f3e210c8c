rule report:
    input:
        results("manifest.parquet"),
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
        config=settings(
            "seed",
            "models",
            "digiface",
            "ffhq",
            "delta",
            "plan",
            "generation",
            "quality",
        ),
    shell:
        "python -m digi2real report --config {params.config:q}"
        " --manifest {input} --card {output.card} --samples {output.samples} > {log} 2>&1"
