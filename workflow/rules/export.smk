rule export_recordio:
    input:
        results("manifest.parquet"),
    output:
        directory(results("export/recordio")),
    log:
        results("logs/export_recordio.log"),
    benchmark:
        results("benchmarks/export_recordio.tsv")
    conda:
        "../../envs/cpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings(stages.export_recordio),
        results=lambda wildcards, input: os.path.dirname(input[0]),
    shell:
        "python -m digi2real export-recordio --config {params.config:q} --results {params.results}"
        " --manifest {input} --out {output} > {log} 2>&1"


rule export_webdataset:
    input:
        results("manifest.parquet"),
    output:
        directory(results("export/webdataset")),
    log:
        results("logs/export_webdataset.log"),
    benchmark:
        results("benchmarks/export_webdataset.tsv")
    conda:
        "../../envs/cpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings(stages.export_webdataset),
        results=lambda wildcards, input: os.path.dirname(input[0]),
    shell:
        "python -m digi2real export-webdataset --config {params.config:q} --results {params.results}"
        " --manifest {input} --out {output} > {log} 2>&1"


rule export_imagefolder:
    input:
        results("manifest.parquet"),
    output:
        directory(results("export/imagefolder")),
    log:
        results("logs/export_imagefolder.log"),
    benchmark:
        results("benchmarks/export_imagefolder.tsv")
    conda:
        "../../envs/cpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings(stages.export_imagefolder),
        results=lambda wildcards, input: os.path.dirname(input[0]),
    shell:
        "python -m digi2real export-imagefolder --config {params.config:q} --results {params.results}"
        " --manifest {input} --out {output} > {log} 2>&1"
