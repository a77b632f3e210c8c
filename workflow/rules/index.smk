rule demo_assets:
    output:
        f"{config['demo']}/built.txt" if config["demo"] else "demo/built.txt",
    log:
        results("logs/demo_assets.log"),
    benchmark:
        results("benchmarks/demo_assets.tsv")
    conda:
        "../../envs/cpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["cpu"],
    shell:
        "python -m digi2real demo-assets --out $(dirname {output}) > {log} 2>&1"


rule index_digiface:
    input:
        demo=demo_assets,
        listing=listing("digiface"),
    output:
        results("index/digiface.parquet"),
    log:
        results("logs/index_digiface.log"),
    benchmark:
        results("benchmarks/index_digiface.tsv")
    conda:
        "../../envs/cpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings(stages.index_digiface),
        listing=lambda wildcards, input: (
            f"--listing {input.listing}" if input.listing else ""
        ),
    shell:
        "python -m digi2real index-digiface --config {params.config:q} --out {output}"
        " {params.listing} > {log} 2>&1"


rule index_ffhq:
    input:
        demo=demo_assets,
        listing=listing("ffhq"),
    output:
        results("index/ffhq.parquet"),
    log:
        results("logs/index_ffhq.log"),
    benchmark:
        results("benchmarks/index_ffhq.tsv")
    conda:
        "../../envs/cpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings(stages.index_ffhq),
        listing=lambda wildcards, input: (
            f"--listing {input.listing}" if input.listing else ""
        ),
    shell:
        "python -m digi2real index-ffhq --config {params.config:q} --out {output}"
        " {params.listing} > {log} 2>&1"


rule index_gallery:
    input:
        demo=demo_assets,
        listing=listing("gallery"),
    output:
        results("index/gallery.parquet"),
    log:
        results("logs/index_gallery.log"),
    benchmark:
        results("benchmarks/index_gallery.tsv")
    conda:
        "../../envs/cpu.yaml"
    container:
        CONTAINER
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings(stages.index_gallery),
        listing=lambda wildcards, input: (
            f"--listing {input.listing}" if input.listing else ""
        ),
    shell:
        "python -m digi2real index-gallery --config {params.config:q} --out {output}"
        " {params.listing} > {log} 2>&1"
