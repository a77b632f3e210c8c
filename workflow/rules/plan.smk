rule plan:
    input:
        digiface=results("embeddings/digiface.h5"),
        real=real_faces_for("plan"),
    output:
        expand(results("plan/{shard}.h5"), shard=GENERATION_SHARDS),
    log:
        job_log("plan"),
    benchmark:
        job_benchmark("plan")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("plan"),
        real=lambda wildcards, input: f"--real {input.real}" if input.real else "",
        # A sweep's plan (sweep_plan): --identities, its first sweep.identities.
        identities="",
    shell:
        "python -m digi2real plan --config {params.config:q} --embeddings {input.digiface}"
        " {params.real} {params.identities} --out {output} > {log} 2>&1"
