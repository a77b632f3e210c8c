"""The demo assets: deterministic, in the real on-disk layouts, loadable by the real loaders,
and good enough for the face pipeline (one face per image, sane landmarks, identity signal)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from digi2real import demo

pytestmark = pytest.mark.unit

N_IDENTITIES, IMAGES_PER_IDENTITY, N_FFHQ = 8, 6, 24
MODEL_FILES = (
    "arc2face/encoder/config.json",
    "arc2face/encoder/pytorch_model.bin",
    "arc2face/arc2face/config.json",
    "arc2face/arc2face/diffusion_pytorch_model.safetensors",
    "arc2face/arcface.onnx",
    "antelopev2/scrfd_10g_bnkps.onnx",
    "sd15/vae/config.json",
    "sd15/vae/diffusion_pytorch_model.safetensors",
    "sd15/tokenizer/vocab.json",
    "sd15/tokenizer/merges.txt",
    "sd15/tokenizer/tokenizer_config.json",
    "sd15/tokenizer/special_tokens_map.json",
    "sd15/scheduler/scheduler_config.json",
)


@pytest.fixture(scope="module")
def root(demo_root) -> Path:
    """The suite's shared demo build (conftest.py), made by build_demo_assets' defaults."""
    return demo_root


@pytest.fixture(scope="module")
def models(root) -> Path:
    return root / "models"


def digiface_images(root: Path):
    """(identity, BGR image, drawn face box, drawn landmarks) for every DigiFace-like image."""
    for identity in range(N_IDENTITIES):
        for k in range(IMAGES_PER_IDENTITY):
            image = cv2.imread(str(root / "digiface" / str(identity) / f"{k}.png"))
            box, landmarks = demo.face_box(identity, k), demo.face_landmarks(identity, k)
            yield identity, image, np.array(box), landmarks


def ffhq_images(root: Path):
    for index in range(N_FFHQ):
        path = root / "ffhq" / "thumbnails128x128" / "00000" / f"{index:05d}.png"
        box, landmarks = demo.ffhq_face_box(index), demo.ffhq_face_landmarks(index)
        yield index, cv2.imread(str(path)), np.array(box), landmarks


def all_images(root: Path):
    for _, image, box, landmarks in digiface_images(root):
        yield image, box, landmarks
    for _, image, box, landmarks in ffhq_images(root):
        yield image, box, landmarks


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def detector(models):
    from insightface.model_zoo import get_model

    return get_model(
        str(models / "antelopev2" / "scrfd_10g_bnkps.onnx"), providers=["CPUExecutionProvider"]
    )


@pytest.fixture(scope="module")
def recognizer(models):
    from insightface.model_zoo import get_model

    return get_model(str(models / "arc2face" / "arcface.onnx"), providers=["CPUExecutionProvider"])


def norm_crop(image, keypoints):
    from insightface.utils import face_align

    with warnings.catch_warnings():  # scikit-image deprecates what insightface calls
        warnings.simplefilter("ignore", FutureWarning)
        return face_align.norm_crop(image, keypoints)


# --- data -----------------------------------------------------------------------------------


def test_data_layout(root):
    assert sorted((root / "digiface").iterdir()) == [
        root / "digiface" / str(i) for i in range(N_IDENTITIES)
    ]
    for identity in range(N_IDENTITIES):
        names = sorted(p.name for p in (root / "digiface" / str(identity)).iterdir())
        assert names == sorted(f"{k}.png" for k in range(IMAGES_PER_IDENTITY))
        with Image.open(root / "digiface" / str(identity) / "0.png") as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (112, 112))
    ffhq = root / "ffhq" / "thumbnails128x128"
    assert [p.name for p in ffhq.iterdir()] == ["00000"]
    assert sorted(p.name for p in (ffhq / "00000").iterdir()) == [
        f"{i:05d}.png" for i in range(N_FFHQ)
    ]
    with Image.open(ffhq / "00000" / "00023.png") as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (128, 128))


def test_ffhq_folders_of_a_thousand(tmp_path, monkeypatch):
    blank = Image.new("RGB", (1, 1))  # the layout is under test, not the drawing
    monkeypatch.setattr(demo.faces, "draw_ffhq_face", lambda index, seed=0: blank)
    demo.build_demo_data(tmp_path, n_identities=0, n_ffhq=1002)
    thumbnails = tmp_path / "ffhq" / "thumbnails128x128"
    assert sorted(p.name for p in thumbnails.iterdir()) == ["00000", "01000"]
    assert len(list((thumbnails / "00000").iterdir())) == 1000
    assert sorted(p.name for p in (thumbnails / "01000").iterdir()) == ["01000.png", "01001.png"]


def test_build_is_byte_identical(root, tmp_path):
    demo.build_demo_assets(tmp_path)
    ours = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    again = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert ours == again
    # and the verification file of held-out identities (benchmarks/demo.bin), and the mix-in's
    # "real" identities (one of a single image)
    mixin = demo.faces.MIXIN_IDENTITIES * demo.faces.MIXIN_IMAGES + 1
    assert len(ours) == N_IDENTITIES * IMAGES_PER_IDENTITY + N_FFHQ + len(MODEL_FILES) + 1 + mixin
    for relative in ours:
        assert (root / relative).read_bytes() == (tmp_path / relative).read_bytes(), relative


def test_models_layout(models):
    for relative in MODEL_FILES:
        assert (models / relative).is_file(), relative
    # Arc2Face's encoder was saved by transformers 4.36 as a pickle only.
    assert sorted(p.name for p in (models / "arc2face" / "encoder").iterdir()) == [
        "config.json",
        "pytorch_model.bin",
    ]


def test_faces_depend_on_identity_image_and_seed():
    first = np.asarray(demo.draw_face(3, 1))
    assert np.array_equal(first, np.asarray(demo.draw_face(3, 1)))
    assert not np.array_equal(first, np.asarray(demo.draw_face(3, 2)))
    assert not np.array_equal(first, np.asarray(demo.draw_face(4, 1)))
    assert not np.array_equal(first, np.asarray(demo.draw_face(3, 1, seed=1)))
    big = demo.draw_face(3, 1, size=224)
    assert (big.mode, big.size) == ("RGB", (224, 224))


def test_skin_is_skin_like_and_backgrounds_are_not(root):
    for image, box, _ in all_images(root):
        rgb = image[..., ::-1].astype(int)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        a, b = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
        for side in (-1, 1):  # the cheeks
            r, g, bl = rgb[int(cy + 0.2 * b), int(cx + side * 0.55 * a)]
            assert r > g > bl and r - bl >= 45, (r, g, bl)
        for r, _, bl in (rgb[1, 1], rgb[1, -2]):  # the top corners show background
            assert r - bl <= 5


# --- tokenizer, encoder, UNet, VAE, scheduler -------------------------------------------------


@pytest.mark.parametrize("loader", ["CLIPTokenizer", "AutoTokenizer"])
def test_tokenizer(models, loader):
    import transformers

    folder = models / "sd15" / "tokenizer"
    assert (folder / "merges.txt").read_text().splitlines()[0] == "#version: 0.2"
    tok = getattr(transformers, loader).from_pretrained(folder, local_files_only=True)
    assert tok.model_max_length == 77
    bos, eos = tok.bos_token_id, tok.eos_token_id
    assert tok.pad_token_id == eos and tok.convert_ids_to_tokens([eos]) == ["<|endoftext|>"]
    words = [tok.convert_tokens_to_ids(f"{w}</w>") for w in demo.PROMPT.split()]
    assert tok.unk_token_id not in words
    ids = tok(demo.PROMPT, padding="max_length", max_length=77).input_ids
    assert ids == [bos, *words, eos] + [eos] * (77 - 7)
    assert tok.encode("id", add_special_tokens=False) == [tok.convert_tokens_to_ids("id</w>")]
    assert tok("").input_ids == [bos, eos]
    assert tok("", padding="max_length", max_length=77).input_ids == [bos] + [eos] * 76
    # Any other text still tokenizes, letter by letter, without unknown tokens.
    assert tok.unk_token_id not in tok("Zebra 42!", add_special_tokens=False).input_ids


def load_encoder(models: Path):
    """Arc2Face's loading path: a 4.x pickle whose keys carry the `text_model.` prefix."""
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = models / "arc2face" / "encoder"
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert state and all(key.startswith("text_model.") for key in state)
    assert "text_model.encoder.layers.0.self_attn.q_proj.weight" in state
    assert "text_model.final_layer_norm.weight" in state
    model = CLIPTextModel(CLIPTextConfig.from_json_file(folder / "config.json"))
    model.load_state_dict({k.removeprefix("text_model."): v for k, v in state.items()}, strict=True)
    return model.eval()


def test_encoder_round_trip(models):
    from transformers import CLIPTokenizer

    config = json.loads((models / "arc2face" / "encoder" / "config.json").read_text())
    assert config["architectures"] == ["CLIPTextModel"]
    assert config["model_type"] == "clip_text_model"
    assert config["transformers_version"] == "4.36.2"
    assert config["torch_dtype"] == "float32"
    assert config["hidden_size"] == demo.TINY_HIDDEN_SIZE
    assert config["hidden_act"] == "quick_gelu"
    tok = CLIPTokenizer.from_pretrained(models / "sd15" / "tokenizer", local_files_only=True)
    assert config["vocab_size"] == len(tok)
    assert (config["bos_token_id"], config["eos_token_id"]) == (tok.bos_token_id, tok.eos_token_id)

    ids = torch.tensor([tok(demo.PROMPT, padding="max_length", max_length=77).input_ids])
    loaded = load_encoder(models)
    built = demo._build_encoder(tok.get_vocab(), seed=0)
    with torch.no_grad():
        expected = built(ids).last_hidden_state
        actual = loaded(ids).last_hidden_state
    assert actual.shape == (1, 77, demo.TINY_HIDDEN_SIZE)
    assert torch.equal(actual, expected)


def test_unet_vae_scheduler_load(models):
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(
        models / "arc2face" / "arc2face", local_files_only=True
    )
    assert unet.config.cross_attention_dim == demo.TINY_HIDDEN_SIZE
    vae = AutoencoderKL.from_pretrained(models / "sd15" / "vae", local_files_only=True)
    assert vae.config.scaling_factor == 0.18215
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
        assert latents.shape == (1, 4, 8, 8)  # SD's factor of 8
        noise = unet(latents, 10, encoder_hidden_states=torch.zeros(1, 77, 576)).sample
    assert noise.shape == (1, 4, 8, 8) and torch.isfinite(noise).all()

    folder = models / "sd15" / "scheduler"
    assert json.loads((folder / "scheduler_config.json").read_text()) == {
        "_class_name": "PNDMScheduler",
        "_diffusers_version": "0.6.0",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
    }
    scheduler = DPMSolverMultistepScheduler.from_config(
        DPMSolverMultistepScheduler.load_config(folder)
    )
    assert scheduler.config.beta_schedule == "scaled_linear"


def test_stable_diffusion_pipeline_runs(models):
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTokenizer

    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(models / "sd15" / "vae", local_files_only=True),
        text_encoder=load_encoder(models),
        tokenizer=CLIPTokenizer.from_pretrained(
            models / "sd15" / "tokenizer", local_files_only=True
        ),
        unet=UNet2DConditionModel.from_pretrained(
            models / "arc2face" / "arc2face", local_files_only=True
        ),
        scheduler=DPMSolverMultistepScheduler.from_config(
            DPMSolverMultistepScheduler.load_config(models / "sd15" / "scheduler")
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    images = pipe(
        prompt_embeds=torch.randn(1, 77, demo.TINY_HIDDEN_SIZE, generator=generator),
        num_inference_steps=2,
        height=64,
        width=64,
        guidance_scale=3.0,
        output_type="np",
        generator=generator,
    ).images
    assert images.shape == (1, 64, 64, 3)
    assert np.isfinite(images).all()


# --- detector -------------------------------------------------------------------------------


def test_detector_is_routed_as_scrfd(models, detector):
    import onnx
    import onnxruntime
    from insightface.model_zoo.scrfd import SCRFD

    assert isinstance(detector, SCRFD)
    assert (detector.use_kps, detector.fmc, detector._num_anchors) == (True, 3, 2)
    path = models / "antelopev2" / "scrfd_10g_bnkps.onnx"
    graph = onnx.load(str(path)).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[:2]] == [1, 3]
    assert all(d.dim_param for d in dims[2:])  # dynamic height and width, as SCRFD's
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for height, width in ((128, 128), (96, 160), (100, 120)):
        outputs = session.run(
            None, {session.get_inputs()[0].name: np.zeros((1, 3, height, width), np.float32)}
        )
        assert len(outputs) == 9
        for index, output in enumerate(outputs):
            stride = (8, 16, 32)[index % 3]
            assert output.shape == (
                (height // stride) * (width // stride) * 2,
                (1, 4, 10)[index // 3],
            )


@pytest.mark.parametrize("det_size", [128, 640])
@pytest.mark.parametrize("pad", [0.0, 0.5])
def test_detector_finds_each_demo_face_once(root, detector, det_size, pad):
    scores, errors = [], []
    for index, (image, box, landmarks) in enumerate(all_images(root)):
        border = int(round(pad * image.shape[0]))
        padded = cv2.copyMakeBorder(image, *[border] * 4, cv2.BORDER_CONSTANT, value=0)
        # max_num=0: NMS alone must leave a single face.
        boxes, keypoints = detector.detect(padded, input_size=(det_size, det_size), max_num=0)
        assert boxes.shape == (1, 5) and keypoints.shape == (1, 5, 2)
        scores.append(boxes[0, 4])
        assert iou(boxes[0, :4] - border, box) > 0.7
        (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = keypoints[0]
        assert lx < nx < rx and mlx < mrx
        assert max(ly, ry) < ny < min(mly, mry)
        # The detector ignores in-plane rotation (up to 8 degrees), hence a few pixels' slack.
        errors.append(np.linalg.norm(keypoints[0] - border - landmarks, axis=1).mean())
        if index % 8 == 0:  # the pipeline's own call
            same, _ = detector.detect(
                padded, input_size=(det_size, det_size), max_num=1, metric="max"
            )
            assert np.array_equal(same, boxes)
    assert min(scores) > 0.5
    assert np.mean(errors) < 4.0 and max(errors) < 8.0


def test_detector_default_sizes_also_give_one_face(root, detector):
    # Without input_size, insightface runs the default sizes (128 and 640) and merges them.
    for image, _, _ in all_images(root):
        boxes, _ = detector.detect(image)
        assert boxes.shape == (1, 5)


def test_detector_ignores_images_without_a_face(detector):
    rng = np.random.default_rng(0)
    blue_noise = np.clip(rng.normal((200, 90, 40), 30, (112, 112, 3)), 0, 255)  # BGR
    speck = np.zeros((112, 112, 3), np.uint8)
    speck[...] = (160, 100, 60)  # BGR: blue
    speck[50:56, 50:56] = (130, 172, 224)  # 0.3% of the image
    for image in (
        np.full((112, 112, 3), 128, np.uint8),
        blue_noise.astype(np.uint8),
        np.zeros((112, 112, 3), np.uint8),
        rng.integers(0, 256, (112, 112, 3)).astype(np.uint8),  # speckled, not a blob
        speck,  # skin-coloured, but far too small to be a face
    ):
        for size in (128, 640):
            boxes, _ = detector.detect(image, input_size=(size, size), det_thresh=0.0, max_num=1)
            assert boxes[:, 4].max(initial=0.0) < 0.5
            boxes, _ = detector.detect(image, input_size=(size, size))
            assert boxes.shape == (0, 5)


def test_aligned_crops_contain_the_face(root, detector):
    for image, _, _ in all_images(root):
        _, keypoints = detector.detect(image, input_size=(128, 128), max_num=1, metric="max")
        crop = norm_crop(image, keypoints[0]).astype(int)
        assert crop.shape == (112, 112, 3)
        red_minus_blue = crop[..., 2] - crop[..., 0]
        # Cheeks, nose and chin sit where ArcFace's template expects the face.
        assert (red_minus_blue[60:100, 30:82] > 40).mean() > 0.6
        assert (red_minus_blue[:, :8] > 40).mean() < 0.5  # the sides are background or hair


# --- recognizer -----------------------------------------------------------------------------


def test_recognizer_is_routed_as_arcface(models, recognizer):
    import onnx
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    assert isinstance(recognizer, ArcFaceONNX)
    first_nodes = onnx.load(str(models / "arc2face" / "arcface.onnx")).graph.node[:8]
    assert not [n.name for n in first_nodes if n.name.startswith(("Sub", "_minus", "Mul", "_mul"))]
    # mean/std 127.5 like Arc2Face's arcface.onnx, not the mxnet-style built-in normalisation.
    assert (recognizer.input_mean, recognizer.input_std) == (127.5, 127.5)
    assert recognizer.input_size == (112, 112)
    crops = [np.full((112, 112, 3), value, np.uint8) for value in (0, 60, 120, 180, 240)]
    assert recognizer.get_feat(crops[:1]).shape == (1, 512)
    features = recognizer.get_feat(crops)
    assert features.shape == (5, 512) and np.isfinite(features).all()


def test_recognizer_separates_identities(root, detector, recognizer):
    crops, identities = [], []
    for identity, image, _, _ in digiface_images(root):
        _, keypoints = detector.detect(image, input_size=(128, 128), max_num=1, metric="max")
        crops.append(norm_crop(image, keypoints[0]))
        identities.append(identity)
    features = recognizer.get_feat(crops)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    similarity = features @ features.T
    labels = np.array(identities)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    intra = similarity[same & off_diagonal].mean()
    inter = similarity[~same].mean()
    assert intra > inter + 0.1


def test_the_verification_file_pairs_held_out_identities(root):
    from digi2real.verification import load_bin

    faces = load_bin(root / "benchmarks/demo.bin")
    assert faces.images.shape == (40, 112, 112, 3) and faces.images.dtype == np.uint8
    assert faces.issame.tolist() == [True, False] * 10  # each fold holds both kinds
    # Held out: none of its identities is a demo subject that a run could train on.
    assert min(demo.faces.BENCHMARK_IDENTITIES) >= N_IDENTITIES
