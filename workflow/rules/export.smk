# export.mixin: the real identities drawn once from their source, which every export appends
# after the synthetic ones (digi2real/mixin.py).
rule sample_mixin:
    input:
        mixin_source,
    output:
        directory(results(MIXIN_SAMPLE)),
    log:
        job_log("sample_mixin"),
    benchmark:
        job_benchmark("sample_mixin")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("sample_mixin"),
    shell:
        "python -m digi2real sample-mixin --config {params.config:q} --out {output} > {log} 2>&1"


rule export_recordio:
    input:
        manifest=results("manifest.parquet"),
        mixin=mixin_sample,
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
        results=lambda wildcards, input: os.path.dirname(input.manifest),
        mixin=mixin_option,
    shell:
        "python -m digi2real export-recordio --config {params.config:q} --results {params.results}"
        " --manifest {input.manifest} {params.mixin} --out {output} > {log} 2>&1"


rule export_webdataset:
    input:
        manifest=results("manifest.parquet"),
        mixin=mixin_sample,
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
        results=lambda wildcards, input: os.path.dirname(input.manifest),
        mixin=mixin_option,
    shell:
        "python -m digi2real export-webdataset --config {params.config:q} --results {params.results}"
        " --manifest {input.manifest} {params.mixin} --out {output} > {log} 2>&1"


rule export_imagefolder:
    input:
        manifest=results("manifest.parquet"),
        mixin=mixin_sample,
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
        results=lambda wildcards, input: os.path.dirname(input.manifest),
        mixin=mixin_option,
    shell:
        "python -m digi2real export-imagefolder --config {params.config:q} --results {params.results}"
        " --manifest {input.manifest} {params.mixin} --out {output} > {log} 2>&1"


# train.baseline: digiface's training set, the same identities' DigiFace sources.
rule export_digiface:
    input:
        index=results("index/digiface.parquet"),
        manifest=results("manifest.parquet"),
    output:
        directory(results("baseline/digiface/export/recordio")),
    log:
        job_log("export_digiface", run="baseline/digiface/"),
    benchmark:
        job_benchmark("export_digiface", run="baseline/digiface/")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("export_digiface"),
    shell:
        "python -m digi2real export-digiface --config {params.config:q} --index {input.index}"
        " --manifest {input.manifest} --out {output} > {log} 2>&1"
