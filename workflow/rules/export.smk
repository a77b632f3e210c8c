rule export_recordio:
    input:
        results("manifest.parquet"),
    output:
        directory(results("export/recordio")),
    log:
        job_log("export_recordio"),
    benchmark:
        job_benchmark("export_recordio")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("export_recordio"),
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
        job_log("export_webdataset"),
    benchmark:
        job_benchmark("export_webdataset")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("export_webdataset"),
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
        job_log("export_imagefolder"),
    benchmark:
        job_benchmark("export_imagefolder")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("export_imagefolder"),
        results=lambda wildcards, input: os.path.dirname(input[0]),
    shell:
        "python -m digi2real export-imagefolder --config {params.config:q} --results {params.results}"
        " --manifest {input} --out {output} > {log} 2>&1"
