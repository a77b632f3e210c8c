rule aggregate:
    input:
        manifests=expand(
            results("shards/{shard}/manifest.parquet"), shard=GENERATION_SHARDS
        ),
        real=real_faces_for("quality"),
    output:
        manifest=results("manifest.parquet"),
        csv=results("manifest.csv"),
        embeddings=results("embeddings/generated.h5"),
    log:
        job_log("aggregate"),
    benchmark:
        job_benchmark("aggregate")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        # The quality thresholds are read here only: changing them never regenerates images.
        config=settings_json("aggregate"),
        results=lambda wildcards, output: os.path.dirname(output[0]),
        real=lambda wildcards, input: f"--real {input.real}" if input.real else "",
    shell:
        "python -m digi2real aggregate --config {params.config:q} --results {params.results}"
        " {params.real} --out {output.manifest}"
        " --embeddings {output.embeddings} {input.manifests} > {log} 2>&1"
