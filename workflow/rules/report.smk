rule report:
    input:
        manifest=results("manifest.parquet"),
        evaluation=results("evaluation.json"),
        tables=expand(
            results("evaluation/{table}.parquet"), table=stage("evaluate").TABLES
        ),
        # A mix-in's real faces are said first on the certificate's page.
        mixin=mixin_sample,
        mixin_leaks=mixin_leak_list,
    output:
        samples=report(
            results("samples.png"),
            caption="../report/samples.rst",
            category="1. Dataset",
        ),
        certificate=report(
            results("report/certificate.html"),
            caption="../report/certificate.rst",
            category="2. Certificate",
        ),
        certificate_table=results("report/certificate.csv"),
        figures=[
            report(
                results(f"report/{figure}.png"),
                caption=f"../report/{figure}.rst",
                category="2. Certificate",
            )
            for figure in stage("report").FIGURES
        ],
    log:
        job_log("report"),
    benchmark:
        job_benchmark("report")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("report"),
        results=lambda wildcards, input: os.path.dirname(input.manifest),
        figures=lambda wildcards, output: os.path.dirname(output.certificate),
        mixin=mixin_option,
    shell:
        "python -m digi2real report --config {params.config:q} --results {params.results}"
        " --manifest {input.manifest} --evaluation {input.evaluation} {params.mixin}"
        " --samples {output.samples} --figures {params.figures} > {log} 2>&1"


rule card:
    input:
        # Everything the card reports on is an input: it runs after the exports whose files it
        # counts, and after the jobs whose benchmark files it sums.
        manifest=results("manifest.parquet"),
        models=results("models.json"),
        evaluation=results("evaluation.json"),
        exports=expand(results("export/{format}"), format=config["export"]["formats"]),
        benchmarks=job_benchmarks,
        mixin=mixin_sample,
        mixin_leaks=mixin_leak_list,
    output:
        card=results("dataset_card.json"),
        page=report(
            results("report/dataset_card.html"),
            caption="../report/dataset_card.rst",
            category="1. Dataset",
        ),
    log:
        job_log("card"),
    benchmark:
        job_benchmark("card")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("card"),
        results=lambda wildcards, input: os.path.dirname(input.manifest),
        mixin=mixin_option,
    shell:
        "python -m digi2real card --config {params.config:q} --results {params.results}"
        " --manifest {input.manifest} --models {input.models} --evaluation {input.evaluation}"
        " {params.mixin} --out {output.card} --page {output.page} {input.benchmarks}"
        " > {log} 2>&1"


rule report_training:
    input:
        # Every sub-run's benchmark and training log, and the jobs whose seconds it sums.
        benchmarks=benchmarked_results,
        metrics=training_metrics,
        generation=generation_benchmarks,
        training=training_benchmarks,
    output:
        page=report(
            results("report/training.html"),
            caption="../report/training.rst",
            category="3. Training",
        ),
        curves=report(
            results("report/training_curves.png"),
            caption="../report/training_curves.rst",
            category="3. Training",
        ),
        table=report(
            results("report/benchmark.csv"),
            caption="../report/benchmark_table.rst",
            category="3. Training",
        ),
    log:
        job_log("report_training"),
    benchmark:
        job_benchmark("report_training")
    conda:
        "../../envs/cpu.yaml"
    envmodules:
        *ENVMODULES["cpu"],
    params:
        config=settings_json("report_training"),
        # results/report/training.html's results folder: each input's sub-run is its prefix.
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.page)),
    shell:
        "python -m digi2real report-training --config {params.config:q}"
        " --results {params.results} --benchmarks {input.benchmarks}"
        " --metrics {input.metrics} --generation {input.generation}"
        " --training {input.training} --page {output.page} --curves {output.curves}"
        " --table {output.table} > {log} 2>&1"
