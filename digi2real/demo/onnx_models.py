"""Hand-built ONNX face models for insightface: an SCRFD-shaped detector that finds the skin
blob of a demo face and an ArcFace-shaped recognizer (a fixed random projection)."""

from __future__ import annotations

import math

import numpy as np

from digi2real.demo.faces import KEYPOINT_FRACTIONS, MODEL_STREAM


class _Graph:
    """A tiny onnx.helper wrapper: every op gets a fresh output name and a prefixed node name."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list = []
        self.initializers: list = []

    def const(self, value, dtype=np.float32) -> str:
        from onnx import numpy_helper

        name = f"{self.prefix}const_{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attributes) -> str:
        from onnx import helper

        index = len(self.nodes)
        output = output or f"{self.prefix}{op_type.lower()}_{index}_out"
        self.nodes.append(
            helper.make_node(
                op_type,
                list(inputs),
                [output],
                name=f"{self.prefix}{op_type.lower()}_{index}",
                **attributes,
            )
        )
        return output

    def model(self, name: str, inputs: list, outputs: list):
        from onnx import checker, helper

        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="digi2real.demo"
        )
        model.ir_version = 8  # opset 17's IR: loadable by every onnxruntime that knows opset 17
        checker.check_model(model)
        return model


# Skin: sigmoid(K * ((R - B) / 128 - T)) on insightface's (x - 127.5) / 128 input.
_SKIN_GAIN, _SKIN_THRESHOLD = 40.0, 34.0 / 128.0
# Face box from the skin moments, fitted on demo faces: centre (cx, cy + OY*sy), half sizes
# (KX*sx, KY*sy). Hair covers the forehead and the neck adds skin below, hence OY and KY.
_BOX_KX, _BOX_KY, _BOX_OY = 1.87, 2.15, -0.38
# Confidence: enough skin in the image (MASS, so a skin-coloured speck is no face) and that skin
# packed into its box (FILL, so scattered skin-coloured noise is no face). Demo faces have
# mass >= 0.2 unpadded (>= 0.05 with a border of half the image) and fill >= 0.6.
_MASS_GAIN, _MASS_MIN = 400.0, 0.01
_FILL_GAIN, _FILL_MIN = 20.0, 0.4
_STRIDES = (8, 16, 32)


def detector_model():
    """An SCRFD-shaped ONNX detector (9 outputs, 2 anchors, strides 8/16/32) that finds the
    skin-coloured blob of an image and reports one face box with ArcFace-proportioned keypoints.
    """
    from onnx import TensorProto, helper

    g = _Graph("det_")
    image = "input.1"

    def channel(index: int) -> str:
        starts, ends = g.const([index], np.int64), g.const([index + 1], np.int64)
        return g.op("Slice", image, starts, ends, g.const([1], np.int64))

    # insightface feeds RGB (swapRB), so channel 0 is red and channel 2 is blue.
    red_minus_blue = g.op("Sub", channel(0), channel(2))
    skin = g.op(
        "Sigmoid",
        g.op("Mul", g.op("Sub", red_minus_blue, g.const(_SKIN_THRESHOLD)), g.const(_SKIN_GAIN)),
    )
    # Only the skin map is full resolution: moments come from its column and row profiles, so
    # a 640x640 input costs little more than a 128x128 one.
    column_mass = g.op("ReduceMean", skin, axes=[2], keepdims=1)  # (1, 1, 1, W)
    row_mass = g.op("ReduceMean", skin, axes=[3], keepdims=1)  # (1, 1, H, 1)
    mass = g.op("ReduceMean", column_mass, axes=[3], keepdims=1)  # skin fraction of the image

    def coordinates(profile: str, axis: int) -> tuple[str, str, str]:
        """Pixel indices and pixel centres along a profile, for any input size, and its length."""
        ones = g.op(
            "ConstantOfShape",
            g.op("Shape", profile),
            value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
        )
        count = g.op("CumSum", ones, g.const(axis, np.int64))
        length = g.op("ReduceSum", ones, g.const([axis], np.int64), keepdims=1)
        return g.op("Sub", count, g.const(1.0)), g.op("Sub", count, g.const(0.5)), length

    x_index, x_centre, image_width = coordinates(column_mass, 3)
    y_index, y_centre, image_height = coordinates(row_mass, 2)

    def moments(profile: str, centre: str, axis: int) -> tuple[str, str]:
        axes = g.const([axis], np.int64)
        weight = g.op("Add", g.op("ReduceSum", profile, axes, keepdims=1), g.const(1e-6))

        def average(values: str) -> str:
            summed = g.op("ReduceSum", g.op("Mul", profile, values), axes, keepdims=1)
            return g.op("Div", summed, weight)

        mean = average(centre)
        offset = g.op("Sub", centre, mean)
        spread = g.op("Sqrt", g.op("Add", average(g.op("Mul", offset, offset)), g.const(1e-6)))
        return mean, spread

    cx, sx = moments(column_mass, x_centre, 3)
    cy, sy = moments(row_mass, y_centre, 2)
    box_cx = cx
    box_cy = g.op("Add", cy, g.op("Mul", sy, g.const(_BOX_OY)))
    half_w, half_h = g.op("Mul", sx, g.const(_BOX_KX)), g.op("Mul", sy, g.const(_BOX_KY))
    x1, x2 = g.op("Sub", box_cx, half_w), g.op("Add", box_cx, half_w)
    y1, y2 = g.op("Sub", box_cy, half_h), g.op("Add", box_cy, half_h)
    width, height = g.op("Mul", half_w, g.const(2.0)), g.op("Mul", half_h, g.const(2.0))

    total = g.op("Mul", mass, g.op("Mul", image_width, image_height))
    fill = g.op("Div", total, g.op("Add", g.op("Mul", width, height), g.const(1e-6)))

    def gate(value: str, threshold: float, gain: float) -> str:
        return g.op("Sigmoid", g.op("Mul", g.op("Sub", value, g.const(threshold)), g.const(gain)))

    confidence = g.op("Mul", gate(mass, _MASS_MIN, _MASS_GAIN), gate(fill, _FILL_MIN, _FILL_GAIN))
    corners = g.op("Concat", *[x1, y1] * 5, axis=1)
    extents = g.op("Concat", *[width, height] * 5, axis=1)
    fractions = np.array(KEYPOINT_FRACTIONS, dtype=np.float32).reshape(1, 10, 1, 1)
    keypoints = g.op("Add", corners, g.op("Mul", extents, g.const(fractions)))  # (1, 10, 1, 1)

    def rows(feature: str, channels: int) -> str:
        # (1, C, h, w) -> (h*w*2, C) ordered (row, col, anchor), the layout SCRFD emits.
        flat = g.op(
            "Reshape",
            g.op("Transpose", feature, perm=[0, 2, 3, 1]),
            g.const([-1, channels], np.int64),
        )
        return g.op("Concat", flat, flat, axis=1)

    def anchor_centres(index: str, axis: int, stride: int) -> str:
        """index * stride for each whole cell: SCRFD's anchor centres along one axis."""
        step, axes = g.const([stride], np.int64), g.const([axis], np.int64)
        length = g.op("Slice", g.op("Shape", index), axes, g.const([axis + 1], np.int64))
        end = g.op("Mul", g.op("Div", length, step), step)
        return g.op("Slice", index, g.const([0], np.int64), end, axes, step)

    scores, boxes, points = [], [], []
    for stride in _STRIDES:
        column, row = anchor_centres(x_index, 3, stride), anchor_centres(y_index, 2, stride)
        # Broadcast (1, 1, 1, w) and (1, 1, h, 1) to full (1, 1, h, w) grids.
        ax = g.op("Add", column, g.op("Mul", row, g.const(0.0)))
        ay = g.op("Add", row, g.op("Mul", column, g.const(0.0)))
        inverse = g.const(1.0 / stride)
        dx, dy = g.op("Sub", ax, box_cx), g.op("Sub", ay, box_cy)
        distance = g.op("Add", g.op("Mul", dx, dx), g.op("Mul", dy, dy))
        nearness = g.op("Exp", g.op("Mul", distance, g.const(-1.0 / (2.0 * stride * stride))))
        # Only anchors near the face centre fire, as with a trained detector; their boxes are
        # identical, so NMS keeps one face.
        score = g.op("Mul", confidence, nearness)
        box = g.op(
            "Mul",
            g.op(
                "Concat",
                g.op("Sub", ax, x1),
                g.op("Sub", ay, y1),
                g.op("Sub", x2, ax),
                g.op("Sub", y2, ay),
                axis=1,
            ),
            inverse,
        )
        anchors = g.op("Concat", *[ax, ay] * 5, axis=1)
        point = g.op("Mul", g.op("Sub", keypoints, anchors), inverse)
        scores.append(
            g.op("Reshape", rows(score, 1), g.const([-1, 1], np.int64), output=f"score_{stride}")
        )
        boxes.append(
            g.op("Reshape", rows(box, 4), g.const([-1, 4], np.int64), output=f"bbox_{stride}")
        )
        points.append(
            g.op("Reshape", rows(point, 10), g.const([-1, 10], np.int64), output=f"kps_{stride}")
        )

    inputs = [helper.make_tensor_value_info(image, TensorProto.FLOAT, [1, 3, "height", "width"])]
    outputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"{name}_anchors", channels])
        for names, channels in ((scores, 1), (boxes, 4), (points, 10))
        for name in names
    ]
    return g.model("tiny_scrfd", inputs, outputs)


def recognizer_model(seed: int):
    """An ArcFace-shaped ONNX recognizer: (N, 3, 112, 112) -> (N, 512).

    A fixed random projection of the crop's 8x8 colour layout: crops of one demo identity (same
    skin, hair and face shape) land closer together than crops of two.
    """
    from onnx import TensorProto, helper

    # insightface reads node names starting Sub/_minus and Mul/_mul among the first eight as
    # an mxnet model with normalisation built in; the prefix keeps it on mean/std 127.5.
    g = _Graph("rec_")
    image = "input.1"
    pooled = g.op("AveragePool", image, kernel_shape=[14, 14], strides=[14, 14])
    # Colour is kept, not centred away: skin tone is the demo identities' strongest cue.
    flat = g.op("Flatten", pooled, axis=1)
    rng = np.random.default_rng([seed, MODEL_STREAM])
    # Scaled so embedding norms are in the tens, like a real ArcFace's.
    projection = rng.normal(0.0, 1.0, size=(192, 512)) * (2.5 / math.sqrt(192))
    g.op("MatMul", flat, g.const(projection), output="embedding")
    inputs = [helper.make_tensor_value_info(image, TensorProto.FLOAT, ["N", 3, 112, 112])]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 512])]
    return g.model("tiny_arcface", inputs, outputs)
