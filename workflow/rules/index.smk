rule demo_assets:
    output:
        f"{config['demo']}/built.txt" if config["demo"] else "demo/built.txt",
    log:
        job_log("demo_assets"),
    benchmark:
        job_benchmark("demo_assets")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    shell:
        "python -m digi2real demo-assets --out $(dirname {output}) > {log} 2>&1"


rule index_digiface:
    input:
        demo=demo_assets,
        listing=root_listing("digiface"),
    output:
        results("index/digiface.parquet"),
    log:
        job_log("index_digiface"),
    benchmark:
        job_benchmark("index_digiface")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("index_digiface"),
        listing=lambda wildcards, input: (
            f"--listing {input.listing}" if input.listing else ""
        ),
    shell:
        "python -m digi2real index-digiface --config {params.config:q} --out {output}"
        " {params.listing} > {log} 2>&1"


# FFHQ and the gallery: the real faces.
rule index_real:
    input:
        demo=demo_assets,
        listing=lambda wildcards: root_listing(wildcards.dataset),
    output:
        results("index/{dataset}.parquet"),
    log:
        job_log("index_real", "{dataset}"),
    benchmark:
        job_benchmark("index_real", "{dataset}")
    wildcard_constraints:
        dataset="ffhq|gallery",
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=lambda wildcards: settings_json("index_real", dataset=wildcards.dataset),
        listing=lambda wildcards, input: (
            f"--listing {input.listing}" if input.listing else ""
        ),
    shell:
        "python -m digi2real index-real {wildcards.dataset} --config {params.config:q}"
        " --out {output} {params.listing} > {log} 2>&1"
