"""The Snakemake workflow end to end on the demo, with a zoo of bad inputs: its contracts, its
errors, and every command README shows (its certificate and report: test_certificate_workflow;
its reruns: test_reruns, test_image_keys)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

from digi2real.config import config_slice
from digi2real.formats import Index, write_index
from digi2real.stages import generate
from tests.conftest import REPO, empty_model_layout
from tests.test_training_workflow import TRAINING_LOGS
from tests.workflow_runs import (
    FAST,
    IDENTITIES,
    IMAGES_PER_IDENTITY,
    configure,
    copy_run,
    local_environment,
    planned_jobs,
    read_table,
    remove_generation,
    snakemake,
    stored,
)

pytestmark = pytest.mark.workflow


# --- contracts --------------------------------------------------------------------------


def test_each_input_folder_is_listed_once_per_run(run, zoo):
    """A cluster's metadata server is spared: snakemake's main process lists each input folder
    once and hands the jobs what they need (the listing to the index jobs, the counts to the
    others, whose own parse of the workflow lists nothing). DigiFace's subject folders are
    listed by the index job, and the first few also by the dry run's check of the layout."""
    from digi2real.layout import SUBJECTS_CHECKED_PER_PART

    digiface, ffhq = (folder.resolve() for folder in zoo)
    lines = (run / "listings.log").read_text().splitlines()
    listings: dict[str, int] = {}
    for line in lines:
        folder = line.split("\t")[1]
        listings[folder] = listings.get(folder, 0) + 1
    ffhq_folders = [str(ffhq), *(str(p) for p in ffhq.rglob("*") if p.is_dir())]
    assert {folder: listings.get(folder, 0) for folder in ffhq_folders} == dict.fromkeys(
        ffhq_folders, 1
    )
    assert listings[str(digiface)] == 1
    subjects = {str(digiface / str(k)): listings.get(str(digiface / str(k)), 0) for k in range(10)}
    checked_twice = [folder for folder, count in subjects.items() if count == 2]
    assert set(subjects.values()) <= {1, 2} and len(checked_twice) <= SUBJECTS_CHECKED_PER_PART


def test_every_output_file_is_as_readable_as_the_umask_says(run):
    umask = os.umask(0o022)
    os.umask(umask)
    files = [p for p in (run / "results").rglob("*") if p.is_file()]
    assert len(files) > 100
    wrong = [p for p in files if p.stat().st_mode & 0o777 != 0o666 & ~umask]
    assert not wrong, [(str(p.relative_to(run)), oct(p.stat().st_mode & 0o777)) for p in wrong[:5]]


def test_embeddings_contract_and_bad_inputs(run):
    results = run / "results"
    with h5py.File(results / "embeddings/digiface.h5") as file:
        embedding, status = file["embedding"][()], file["status"][()]
        paths = [p.decode() for p in file["path"][()]]
        identity = [i.decode() for i in file["identity"][()]]
        assert embedding.dtype == np.float32 and embedding.shape == (len(paths), 512)
        assert status.dtype == np.int8 and file["det_score"].shape == (len(paths),)
        assert len(file.attrs["arcface_sha256"]) == 64 and len(file.attrs["detector_sha256"]) == 64
        assert file.attrs["mode"] == "detect" and file.attrs["dataset_root"]
    by_path = dict(zip(paths, status.tolist(), strict=True))
    np.testing.assert_allclose(np.linalg.norm(embedding[status == 0], axis=1), 1.0, atol=1e-5)
    assert not embedding[status != 0].any()
    assert by_path["0/6.png"] == by_path["0/7.png"] == by_path["0/8.png"] == 1  # unreadable
    assert "0/notes.txt" not in by_path
    assert by_path["1/0.png"] == 0 and by_path["1/1.png"] == 0  # RGBA and 16-bit decode
    assert by_path["8/"] == 1 and identity[paths.index("8/")] == "8"  # the empty folder
    assert [by_path[f"9/{k}.png"] for k in range(3)] == [2, 2, 2]  # no face
    assert sorted(set(identity), key=int) == [str(k) for k in range(IDENTITIES)]
    with h5py.File(results / "embeddings/ffhq.h5") as file:
        ffhq_paths = [p.decode() for p in file["path"][()]]
        ffhq = dict(zip(ffhq_paths, file["status"][()].tolist(), strict=True))
        assert not any(i for i in file["identity"][()])
    assert ffhq["00000/00998.png"] == 1 and ffhq["00000/00999.png"] == 1
    assert sum(s == 0 for s in ffhq.values()) == len(ffhq) - 2


def test_generated_embeddings_contract(run):
    """Every generated image with a face, in the manifest's order of shards, unit norm, its
    cosine to its prototype the manifest's, `passed` as the manifest says."""
    rows = {
        (r["identity"], r["image_index"]): r for r in read_table(run / "results/manifest.parquet")
    }
    prototypes = {}
    for plan in (run / "results/plan").glob("*.h5"):
        with h5py.File(plan) as file:
            names = [n.decode() for n in file["identities/identity"][()]]
            prototypes.update(zip(names, file["identities/prototype"][()], strict=True))
    with h5py.File(run / "results/embeddings/generated.h5") as file:
        identity = [i.decode() for i in file["identity"][()]]
        image_index = file["image_index"][()].tolist()
        embedding, landmarks = file["embedding"][()], file["landmarks"][()]
        passed = file["passed"][()]
    keys = list(zip(identity, image_index, strict=True))
    assert sorted(keys) == sorted(k for k, r in rows.items() if r["status"] == "ok")
    assert embedding.dtype == np.float32 and embedding.shape == (len(keys), 512)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)
    for k, key in enumerate(keys):
        assert passed[k] == rows[key]["passed"], key
        cosine = float(embedding[k] @ prototypes[key[0]])
        assert cosine == pytest.approx(rows[key]["cos_prototype"], abs=1e-5), key
    size = FAST["generation.height"]
    assert landmarks.shape == (len(keys), 5, 2)
    assert np.all((landmarks >= 0) & (landmarks <= size)), "landmarks inside the 64x64 images"
    # The eyes (points 0 and 1) above the mouth corners (3 and 4), left eye left of the right.
    assert np.all(landmarks[:, :2, 1].max(axis=1) < landmarks[:, 3:, 1].min(axis=1))
    assert np.all(landmarks[:, 0, 0] < landmarks[:, 1, 0])


def test_delta_contract(run):
    with h5py.File(run / "results/delta.h5") as file:
        assert file["delta"].shape == (77, 576) and file["delta"].dtype == np.float32
        np.testing.assert_allclose(
            file["delta"][()], file["mean_real"][()] - file["mean_synthetic"][()], atol=1e-6
        )
        assert file.attrs["n_synthetic"] > 0 and file.attrs["n_real"] > 0
        assert file.attrs["mode"] == "per_token" and len(file.attrs["encoder_sha256"]) == 64
        assert "scale" not in file.attrs  # λ is applied at generation, never baked in


def test_plan_contract(run):
    shards = sorted((run / "results/plan").glob("*.h5"))
    assert [p.name for p in shards] == ["0.h5", "1.h5", "2.h5"]
    with h5py.File(shards[0]) as file:
        images = file["images"]
        n = len(images["seed"])
        assert n == 4 * IMAGES_PER_IDENTITY
        for name in ("identity", "image_index", "source_path", "t"):
            assert len(images[name]) == n
        assert images["condition"].shape == (n, 512)
        assert file["identities/prototype"].shape == (4, 512)


def test_manifest_accounts_for_every_planned_image(run):
    rows = read_table(run / "results/manifest.parquet")
    assert len(rows) == IDENTITIES * IMAGES_PER_IDENTITY
    keys = {(r["identity"], r["image_index"]) for r in rows}
    assert keys == {(str(i), k) for i in range(IDENTITIES) for k in range(IMAGES_PER_IDENTITY)}
    expected_columns = {
        "identity", "image_index", "shard", "seed", "t", "source_image", "status",
        "archive", "aligned_path", "raw_path", "det_score", "cos_prototype", "cos_condition",
        "passed", "reject_reason",
    }  # fmt: skip
    assert expected_columns <= set(rows[0])
    skipped = [r for r in rows if r["identity"] in ("8", "9")]
    assert all(r["status"] == "skipped" and not r["passed"] for r in skipped)
    assert all(r["reject_reason"] == "skipped" for r in skipped)
    generated = [r for r in rows if r["status"] != "skipped"]
    assert all(stored(run / "results", r, "raw_path")[:3] == b"\xff\xd8\xff" for r in generated)
    for r in rows:
        assert r["passed"] == (r["reject_reason"] == "")
    csv_lines = (run / "results/manifest.csv").read_text().strip().splitlines()
    assert len(csv_lines) == len(rows) + 1


def test_every_export_holds_every_passed_image_for_its_real_reader(run, mxnet_python, tmp_path):
    from tests.test_exports import assert_exports_hold_every_passed_image

    assert_exports_hold_every_passed_image(run / "results", mxnet_python, tmp_path)
    assert not (run / "results/dataset").exists()  # aggregate no longer makes a file per image


def test_dataset_card_counts_agree_with_the_manifest_and_the_certificate(run):
    """One name, one number: the card's counts are the certificate's, and an identity the
    plan skipped (8: no image, 9: no face) is selected but not planned."""
    rows = read_table(run / "results/manifest.parquet")
    card = json.loads((run / "results/dataset_card.json").read_text())
    evaluation = json.loads((run / "results/evaluation.json").read_text())
    planned = [r for r in rows if r["status"] != "skipped"]
    assert card["identities"] == {
        "selected": IDENTITIES,
        "skipped_by_plan": 2,
        "planned": IDENTITIES - 2,
        "kept": len({r["identity"] for r in rows if r["passed"]}),
    }
    assert card["images"]["planned"] == len(planned) == (IDENTITIES - 2) * IMAGES_PER_IDENTITY
    assert card["images"]["passed"] == sum(r["passed"] for r in rows)
    assert card["images"]["generated"] == sum(r["status"] != "failed" for r in planned)
    rejected = sum(card["images"]["rejected_by_reason"].values())
    assert rejected == len(planned) - card["images"]["passed"]
    certified = evaluation["yield"]
    assert card["images"] == certified["images"]
    assert card["identities"] == {
        k: v for k, v in certified["identities"].items() if k != "skipped_examples"
    }
    assert set(card["model_sha256"]) >= {"models.arc2face_unet", "models.arcface"}
    assert len(card["config_sha256"]) == 64
    assert (run / "results/samples.png").is_file()


def rule_names(workdir: Path) -> set[str]:
    listed = snakemake(workdir, "--list-rules").stdout.split()
    return set(listed) - {"all"}


def test_every_rule_logged_and_benchmarked(run, tmp_path):
    # One job of each rule, in each embedding space: the reference run's, and those that
    # run only with a gallery, a recognizer or the demo's assets, made here.
    jobs = [
        ("demo_assets", "demo_assets"),
        ("index_digiface", "index_digiface"),
        ("index_real", "index_real/ffhq"),
        ("index_real", "index_real/gallery"),
        ("embed", "embed/embeddings/digiface/0"),
        ("embed", "embed/evaluation/embeddings/digiface/0"),
        ("merge_embeddings", "merge_embeddings/evaluation/embeddings/ffhq"),
        ("embed_generated", "embed_generated/0"),
        ("merge_embeddings", "merge_embeddings/embeddings/ffhq"),
        ("estimate_delta", "estimate_delta"),
        ("plan", "plan"),
        ("hash_models", "hash_models"),
        ("generate", "generate/0"),
        ("aggregate", "aggregate"),
        ("evaluate", "evaluate"),
        ("report", "report"),
        ("card", "card"),
        ("export_recordio", "export_recordio"),
        ("export_webdataset", "export_webdataset"),
        ("export_imagefolder", "export_imagefolder"),
        ("sample_mixin", "sample_mixin"),
    ]
    # The training's rules: tests/test_training_workflow.py checks theirs.
    assert {rule for rule, _ in jobs} | set(TRAINING_LOGS) == rule_names(run)
    workdir = copy_run(run, tmp_path / "logs")
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    # index_real/gallery runs only with a gallery, the embedding space evaluation/embeddings with a
    # recognizer.
    config["gallery"] = {"root": config["ffhq"]["root"]}
    config["evaluation"]["recognizer"] = config["models"]["arcface"]
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    targets = [
        "index/gallery.parquet",
        "evaluation/embeddings/ffhq.h5",
        "evaluation/embeddings/digiface/0.h5",
        "evaluation/embeddings/generated/0.h5",
    ]
    snakemake(workdir, *(f"results/{t}" for t in targets))
    # Then demo_assets, alone: with config key demo set, every index depends on its marker, and
    # asked for with the targets above it made every job before them run again (21, not 7).
    config["demo"] = str(tmp_path / "demo")
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(workdir, str(tmp_path / "demo/built.txt"))
    for rule, name in jobs:
        results = workdir / "results"
        assert (results / f"logs/{name}.log").is_file(), rule
        assert (results / f"benchmarks/{name}.tsv").is_file(), rule
        # Noise known to be harmless stays out of the logs (digi2real/__init__.py).
        assert "requires torchvision" not in (results / f"logs/{name}.log").read_text(), rule


# --- config errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, named",
    [
        ({"plan.t": {"mode": "gaussian"}}, "config key plan.t.mode: 'gaussian' is not one of"),
        ({"generation.height": 100}, "config key generation.height: 100 is not a multiple of 8"),
        ({"quality.min_det_score": 2}, "config key quality.min_det_score: 2 is greater than"),
        ({"digiface.selection": {"mode": "list"}}, "config key digiface.selection: 'file' is a"),
        ({"plan.images_per_identity": "twenty"}, "config key plan.images_per_identity: 'twenty'"),
        (
            {"generation.stpes": 5},
            "config key generation.stpes is not a setting; did you mean generation.steps?",
        ),
    ],
)
def test_invalid_config_is_one_error_naming_the_key(demo_root, zoo, tmp_path, override, named):
    configure(tmp_path, demo_root, *zoo, **override)
    result = snakemake(tmp_path, "-n", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert named in output, output[-2000:]
    assert len(output.strip().splitlines()) <= 5, output  # Snakemake's own lines included
    # The CLI, given the same file, rejects it with the same message.
    cli = subprocess.run(
        [sys.executable, "-m", "digi2real", "config", "--config", str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2 and cli.stdout == ""
    message = cli.stderr.strip().removeprefix("digi2real: error: ")
    assert named in message and "\n" not in message
    assert message.split(": ", 1)[1] in output


def test_missing_model_file_is_one_line_naming_the_key(demo_root, zoo, tmp_path):
    configure(tmp_path, demo_root, *zoo, **{"models.arcface": str(tmp_path / "nope.onnx")})
    index = tmp_path / "index.parquet"
    write_index(index, Index([0], ["0"], ["0/0.png"], str(zoo[0])))
    args = ["-m", "digi2real", "embed", "digiface", "--config", str(tmp_path / "config.yaml")]
    job = subprocess.run(
        [sys.executable, *args, "--index", str(index), "--out", str(tmp_path / "o.h5")],
        capture_output=True,
        text=True,
    )
    named = f"config key models.arcface: {tmp_path / 'nope.onnx'} is not a file"
    assert job.returncode == 2 and named in job.stderr and "Traceback" not in job.stderr
    # The dry run says it first, with the job's own message, before anything is submitted.
    dry = snakemake(tmp_path, "-n", check=False)
    output = dry.stdout + dry.stderr
    assert dry.returncode != 0 and named in output
    assert len(output.strip().splitlines()) <= 5, output


@pytest.mark.parametrize(
    "override, named",
    [
        ({"models.arc2face_unet": "nowhere"}, "config key models.arc2face_unet: nowhere is not"),
        ({"models.detector": "nowhere.onnx"}, "config key models.detector: nowhere.onnx is not"),
        ({"digiface.root": "nowhere"}, "config key digiface.root: nowhere is not a folder"),
        ({"ffhq.root": "nowhere"}, "config key ffhq.root: nowhere is not a folder"),
        (
            {"digiface.selection": {"start": 2, "count": 9}},
            "config key digiface.selection.count: 9 identities from number 2 asked for, "
            "digiface.root",
        ),
        ({"ffhq.count": 5000}, "config key ffhq.count: 5000, but ffhq.root"),
        ({"gallery.root": "nowhere"}, "config key gallery.root: nowhere is not a folder"),
        (
            {"evaluation.recognizer": "nowhere.onnx"},
            "config key evaluation.recognizer: nowhere.onnx is not a file",
        ),
        (
            {"benchmark.bins": {"lfw": "nowhere/lfw.bin"}},
            "config key benchmark.bins.lfw: nowhere/lfw.bin is not a file",
        ),
        (
            {"train.enabled": True, "train.data": "webdataset", "export.formats": ["recordio"]},
            "config key train.data: webdataset, but export.formats ['recordio'] does not make it",
        ),
    ],
)
def test_preflight_stops_the_dry_run_naming_the_key(demo_root, zoo, tmp_path, override, named):
    configure(tmp_path, demo_root, *zoo, **override)
    result = snakemake(tmp_path, "-n", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and named in output, output[-2000:]
    assert "Job stats" not in output
    # `digi2real config`, which README tells a user to run first, makes the same checks.
    cli = subprocess.run(
        [sys.executable, "-m", "digi2real", "config", "--config", "config.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 2 and cli.stdout == "", cli.stdout[-500:]
    assert named in cli.stderr and len(cli.stderr.strip().splitlines()) == 1, cli.stderr


def test_a_digiface_root_that_is_not_one_fails_the_dry_run_in_one_line(demo_root, zoo, tmp_path):
    """`root: demo`: its models/ and ffhq/ folders beside digiface/ would be identities, and
    FFHQ's faces a rendered one; the dry run refuses it, and `digi2real config` alike."""
    configure(tmp_path, demo_root, *zoo, **{"digiface.root": str(demo_root)})
    result = snakemake(tmp_path, "-n", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Job stats" not in output
    assert "config key digiface.root: " in output and "not a DigiFace part folder" in output


def test_the_example_profiles_placeholders_are_refused_before_any_job(run, tmp_path):
    workdir = copy_run(run, tmp_path / "profile")
    remove_generation(workdir)
    result = snakemake(workdir, "--profile", str(REPO / "profiles/slurm"), "-n", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Job stats" not in output
    assert (
        "the profile's default-resources still say slurm_account: YOUR_ACCOUNT; replace it with "
        "your account (sacctmgr show assoc user=$USER)"
    ) in output


def test_a_selection_of_all_says_how_many_it_found(demo_root, zoo, tmp_path):
    configure(tmp_path, demo_root, *zoo, **{"digiface.selection": {"start": 3}})
    result = snakemake(tmp_path, "-n")
    assert f"digiface: all 7 identities under {zoo[0]} from number 3 on" in result.stderr
    assert planned_jobs(tmp_path)["generate"] == 2  # 7 identities in shards of 4


def test_readme_step_two_config_runs_a_real_runs_settings(tmp_path):
    """A config with only the keys README's "first cluster run" step 2 sets: the dry run and
    `digi2real config` agree on the production settings, and the shard sizes are a real run's."""
    import shlex

    ffhq = tmp_path / "ffhq"
    ffhq.mkdir()
    for k in range(3):
        Image.new("RGB", (16, 16)).save(ffhq / f"{k:05d}.png")
    digiface = tmp_path / "DigiFace-1M"
    for identity in range(20000):
        (digiface / str(identity)).mkdir(parents=True)
    mine = {
        "models": empty_model_layout(tmp_path / "models"),
        "digiface": {
            "root": str(digiface),
            "selection": {"mode": "range", "start": 0, "count": 20000},
        },
        "ffhq": {"root": str(ffhq)},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(mine))
    output = snakemake(tmp_path, "-n", "-p").stdout
    jobs = planned_jobs(tmp_path)
    assert jobs["generate"] == 200 and jobs["embed"] == 40 + 1  # 20,000 / 500 and 3 / 5,000
    commands = [shlex.split(line) for line in output.splitlines() if "digi2real generate" in line]
    assert len(commands) == 200
    words = commands[0]
    sliced = json.loads(words[words.index("--config") + 1])
    generation = sliced["generation"]
    assert (generation["height"], generation["width"], generation["steps"]) == (512, 512, 25)
    assert generation["guidance"] == 3.0 and generation["scheduler"] == "dpmsolver++"
    assert sliced["plan"] == {"images_per_identity": 20}
    assert sliced["models"] == mine["models"] | {"lcm_lora": None}
    printed = subprocess.run(
        [sys.executable, "-m", "digi2real", "config", "--config", str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    resolved = yaml.safe_load(printed)
    # The job is handed exactly the slice of what `digi2real config` prints that it reads.
    assert sliced == config_slice(resolved, generate.CONFIG_KEYS)
    assert resolved["plan"]["identities_per_shard"] == 100


# --- README's commands, as written --------------------------------------------------------

# README commands the tests cannot run here, and why. Every other command of README's bash
# blocks runs, in order, in one shell, in a copy of this checkout.
NOT_RUN_HERE = {
    "make demo": "the demo workflow: this module runs it on the zoo (make test runs this file)",
    "make test": "the suite itself",
    "python3 -m venv .venv && source .venv/bin/activate": "a venv exists: the suite runs in it",
    "pip install torch --index-url https://download.pytorch.org/whl/cu126": "a CUDA build",
    "pip install -e '.[workflow,gpu]'": "the gpu extra, onnxruntime-gpu: CUDA",
    "pip install --force-reinstall --no-deps onnxruntime-gpu": "CUDA",
    "huggingface-cli download FoivosPar/Arc2Face --local-dir models/arc2face": "network",
    "huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5 --include 'vae/*' "
    "'tokenizer/*' 'scheduler/*' --local-dir models/sd15": "network",
    "CONDA_OVERRIDE_CUDA=12.9 snakemake --sdm conda --conda-create-envs-only "
    "--configfile my.yaml": "conda (tests/test_envs.py checks the environments' contents)",
}


def readme_commands() -> list[str]:
    """Every command of README's bash blocks, in order, its comment stripped."""
    import re

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command:
                commands.append(command)
    return commands


def test_every_command_readme_shows_runs_on_the_demo_as_written(run, tmp_path):
    """README's commands, each as written, in a copy of the checkout where a run has been
    made: `demo.yaml` and the edited `my.yaml` are that run's config (the demo's paths
    substituted), `--profile slurm` finds a profile `./slurm` that runs the jobs here, and
    `~` is a folder of the test's. A command that fails (a target read as a config file, a
    missing required option) fails the test with its output."""
    commands = readme_commands()
    assert set(NOT_RUN_HERE) <= set(commands), set(NOT_RUN_HERE) - set(commands)
    checkout = tmp_path / "checkout"
    shutil.copytree(
        REPO,
        checkout,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "results", "demo", ".snakemake", "__pycache__", "*.egg-info"
        ),
    )
    (checkout / ".venv").symlink_to(Path(sys.prefix))
    for name in ("results", ".snakemake"):
        shutil.copytree(run / name, checkout / name, symlinks=True)
    edited = (run / "config.yaml").read_text()  # the demo's run: its paths, its settings
    (checkout / "demo.yaml").write_text(edited)
    (checkout / "slurm").mkdir()  # `--profile slurm` looks in ./slurm first
    (checkout / "slurm/config.yaml").write_text("cores: 2\nkeep-going: false\n")
    script = ["set -euo pipefail"]
    for command in commands:
        if command in NOT_RUN_HERE:
            continue
        script += [f"echo '+ {command}' >&2", command]
        if command == "cp config.yaml my.yaml":  # then the user edits it: the run's config
            script.append("cat > my.yaml <<'EDITED'\n" + edited + "EDITED")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in local_environment().items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=checkout,
        env={**env, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert (checkout / "report.html").stat().st_size > 100_000
    assert (home / ".config/snakemake/slurm/config.yaml").read_text() == (
        REPO / "profiles/slurm/config.yaml"
    ).read_text()
    # The dry run said what it would do before the run did it; the shard was made by hand last.
    assert "Job stats" in result.stdout + result.stderr or "Nothing to be done" in result.stderr
    assert (checkout / "results/shards/0/manifest.parquet").is_file()
