rule embed_generated:
    input:
        results("shards/{shard}/manifest.parquet"),
    output:
        results("evaluation/embeddings/generated/{shard}.h5"),
    log:
        job_log("embed_generated", "{shard}"),
    benchmark:
        job_benchmark("embed_generated", "{shard}")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("embed_generated"),
    shell:
        "python -m digi2real embed-generated --config {params.config:q} --manifest {input}"
        " --out {output} > {log} 2>&1"


rule evaluate:
    input:
        # The embeddings of one model: the generator's ArcFace, or evaluation.recognizer's.
        unpack(compared_embeddings),
        # The benchmark faces, in the same space, when a recognizer is trained and tested.
        benchmarks=benchmark_embeddings,
        manifest=results("manifest.parquet"),
        plans=expand(results("plan/{shard}.h5"), shard=GENERATION_SHARDS),
    output:
        evaluation=results("evaluation.json"),
        tables=expand(
            results("evaluation/{table}.parquet"), table=stage("evaluate").TABLES
        ),
        # Written beside the tables on every run (header only without benchmarks), so that it
        # can be declared whether or not there are benchmarks; train reads it.
        benchmark_leaks=results(f"evaluation/{stage('evaluate').BENCHMARK_LEAKS}"),
    log:
        job_log("evaluate"),
    benchmark:
        job_benchmark("evaluate")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    # numpy's matrix products, on the 2 cores the benchmark measured (README, "At scale")
    threads: 2
    params:
        # The evaluation's thresholds are read here only: changing them re-evaluates, nothing else.
        config=settings_json("evaluate"),
        tables=lambda wildcards, output: os.path.dirname(output.tables[0]),
        gallery=lambda wildcards, input: (
            f"--gallery {input.gallery}" if input.gallery else ""
        ),
        benchmarks=lambda wildcards, input: (
            f"--benchmarks {input.benchmarks}" if input.benchmarks else ""
        ),
    shell:
        "python -m digi2real evaluate --config {params.config:q} --manifest {input.manifest}"
        " --generated {input.generated} --digiface {input.digiface} --ffhq {input.ffhq}"
        " {params.gallery} {params.benchmarks} --plans {input.plans}"
        " --out {output.evaluation}"
        " --tables {params.tables} > {log} 2>&1"


# The mix-in's real identities searched among the benchmark faces, in the space evaluate
# compares in: a real identity that is a benchmark's person is left out of training.
rule mixin_leaks:
    input:
        mixin=results(MIXIN_SAMPLE),
        benchmarks=results(f"{COMPARED_SPACE}/benchmarks.h5"),
    output:
        results("mixin/benchmark_leaks.csv"),
    log:
        job_log("mixin_leaks"),
    benchmark:
        job_benchmark("mixin_leaks")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("mixin_leaks", recognizer=COMPARED_RECOGNIZER),
        recognizer=COMPARED_RECOGNIZER,
    shell:
        "python -m digi2real mixin-leaks --config {params.config:q} --mixin {input.mixin}"
        " --benchmarks {input.benchmarks} --recognizer {params.recognizer} --out {output}"
        " > {log} 2>&1"
