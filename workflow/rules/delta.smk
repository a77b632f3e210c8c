rule estimate_delta:
    input:
        real=results("embeddings/ffhq.h5"),
        synthetic=results("embeddings/digiface.h5"),
    output:
        results("delta.h5"),
    log:
        job_log("estimate_delta"),
    benchmark:
        job_benchmark("estimate_delta")
    conda:
        "../../envs/gpu.yaml"
    envmodules:
        *ENVMODULES["gpu"],
    params:
        config=settings_json("estimate_delta"),
    shell:
        "python -m digi2real estimate-delta --config {params.config:q} --real {input.real}"
        " --synthetic {input.synthetic} --out {output} > {log} 2>&1"
