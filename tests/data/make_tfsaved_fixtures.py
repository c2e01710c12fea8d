"""Write the TensorFlow SavedModel / TF2 checkpoint / TF.js fixtures (run by hand, never by the tests).

    /work/venv-tf/bin/python tests/data/make_tfsaved_fixtures.py            # SavedModels, checkpoints
    /work/venv-tfjs/bin/python tests/data/make_tfsaved_fixtures.py --tfjs   # TF.js (tensorflowjs 4.22)

Outputs under tests/data/tfsaved/ (SavedModel folders packed as ``<name>.tar.xz``, unpacked by the
tests; the checkpoint as written) and tests/data/tfjs/, each model beside ``<model>.npz``: every
convolution's weight as the framework reports it (``variable.numpy()``, HWIO for Conv2D, (H, W, C, M)
for depthwise: NOT transposed), keyed by the variable's checkpoint key (SavedModel, checkpoint) or
the TF.js weight name; the tests transpose them themselves.

Every model has a regular 3x3 conv, a depthwise 3x3 conv, a separable conv (depthwise 3x3 + 1x1
pointwise), a transposed conv (excluded by the readers), a 1x1 and a 5x5 conv, and two parallel convs
reading one tensor (they share a depth level).
"""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SAVED = HERE / "tfsaved"
TFJS = HERE / "tfjs"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def module_model(tf):
    """A tf.Module calling tf.nn ops on its own variables (no Keras)."""
    rng = np.random.default_rng(13)

    def var(shape, name):
        return tf.Variable(rng.standard_normal(shape).astype(np.float32), name=name)

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.stem = var((3, 3, 3, 4), "stem")              # regular 3x3, 3 -> 4
            self.dw = var((3, 3, 4, 2), "dw")                  # depthwise 3x3, C=4, M=2 -> 8
            self.sep_dw = var((3, 3, 8, 1), "sep_dw")          # separable: depthwise part
            self.sep_pw = var((1, 1, 8, 6), "sep_pw")          # separable: pointwise part
            self.left = var((3, 3, 6, 3), "left")              # two parallel convs on one tensor
            self.right = var((1, 1, 6, 3), "right")
            self.five = var((5, 5, 6, 4), "five")              # 5x5 after the concat
            self.up = var((3, 3, 2, 4), "up")                  # transposed: (H, W, out, in)

        @tf.function(input_signature=[tf.TensorSpec([1, 12, 12, 3], tf.float32)])
        def __call__(self, x):
            x = tf.nn.relu(tf.nn.conv2d(x, self.stem, 1, "SAME"))
            x = tf.nn.depthwise_conv2d(x, self.dw, [1, 1, 1, 1], "SAME")
            x = tf.nn.separable_conv2d(x, self.sep_dw, self.sep_pw, [1, 1, 1, 1], "SAME")
            x = tf.concat([tf.nn.conv2d(x, self.left, 1, "SAME"), tf.nn.conv2d(x, self.right, 1, "SAME")], -1)
            x = tf.nn.conv2d(x, self.five, 1, "SAME")
            return tf.nn.conv2d_transpose(x, self.up, [1, 24, 24, 2], 2, "SAME")

    net = Net()
    net(tf.zeros([1, 12, 12, 3]))
    return net


def write_tf1_savedmodel(tf, folder: Path) -> dict[str, np.ndarray]:
    """A TF1-style SavedModel (a graph and a session, no object graph): conv, depthwise, 1x1."""
    rng = np.random.default_rng(5)
    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, 8, 8, 3], name="x")
        a = tf.compat.v1.get_variable("stem/kernel", initializer=rng.standard_normal((3, 3, 3, 4)).astype(np.float32))
        b = tf.compat.v1.get_variable("dw/depthwise_kernel", initializer=rng.standard_normal((3, 3, 4, 2)).astype(np.float32))
        c = tf.compat.v1.get_variable("head/kernel", initializer=rng.standard_normal((1, 1, 8, 5)).astype(np.float32))
        y = tf.nn.conv2d(tf.nn.depthwise_conv2d(tf.nn.conv2d(x, a, 1, "SAME"), b, [1, 1, 1, 1], "SAME"), c, 1, "SAME")
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.saved_model.simple_save(sess, str(folder), {"x": x}, {"y": y})
            return {v.op.name: sess.run(v) for v in (a, b, c)}


def keras_layers(keras):
    """The same kinds of layers as a small functional Keras model (keras 3 or tf_keras)."""
    L = keras.layers
    inp = keras.Input((12, 12, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inp)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = L.SeparableConv2D(6, 3, padding="same", name="sep")(x)
    x = L.Concatenate()([L.Conv2D(3, 3, padding="same", name="left")(x), L.Conv2D(3, 1, name="right")(x)])
    x = L.Conv2D(4, 5, padding="same", name="five")(x)
    out = L.Conv2DTranspose(2, 3, strides=2, padding="same", name="up")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(17)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})


def checkpoint_keys(tf, prefix: str) -> dict[str, np.ndarray]:
    """Checkpoint key -> value of every 4-D tensor, as TensorFlow reads the checkpoint back."""
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    return {k: reader.get_tensor(k) for k, s in shapes.items() if len(s) == 4}


def write_tensorflow() -> None:
    import tensorflow as tf

    fresh(SAVED)
    net = module_model(tf)
    tf.saved_model.save(net, str(SAVED / "module_sm"))
    save_npz(SAVED / "module_sm.npz", checkpoint_keys(tf, str(SAVED / "module_sm" / "variables" / "variables")))
    ckpt = tf.train.Checkpoint(net=net)
    prefix = ckpt.write(str(SAVED / "ckpt" / "net"))
    save_npz(SAVED / "ckpt.npz", checkpoint_keys(tf, prefix))

    import keras
    model = keras_layers(keras)
    model.export(str(SAVED / "keras_export"), verbose=False)
    save_npz(SAVED / "keras_export.npz", {w.path: w.numpy() for w in model.weights if len(w.shape) == 4})

    import tf_keras
    old = keras_layers(tf_keras)
    old.save(str(SAVED / "tfkeras_sm"), include_optimizer=False)
    save_npz(SAVED / "tfkeras_sm.npz", checkpoint_keys(tf, str(SAVED / "tfkeras_sm" / "variables" / "variables")))
    save_npz(SAVED / "tf1_sm.npz", write_tf1_savedmodel(tf, SAVED / "tf1_sm"))
    for name in ("module_sm", "keras_export", "tfkeras_sm", "tf1_sm"):  # graphs of ~100 KB: committed as .tar.xz
        with tarfile.open(SAVED / f"{name}.tar.xz", "w:xz") as archive:
            archive.add(SAVED / name, arcname=name)
        shutil.rmtree(SAVED / name)


def write_tfjs() -> None:
    """tensorflowjs 4.22: layers models in float32 (in 2 KB shards), float16, uint8 and uint16, a graph
    model of the tf.Module and one of the Keras model (whose biases fuse into _FusedConv2D)."""
    import tensorflowjs as tfjs
    import tf_keras
    import tensorflow as tf

    fresh(TFJS)
    model = keras_layers(tf_keras)  # the tf_keras SavedModel's model, the same seed
    weights = {f"{layer.name}/{w.name.split('/')[-1].split(':')[0]}": w.numpy()
               for layer in model.layers for w in layer.weights if len(w.shape) == 4}
    save_npz(TFJS / "layers.npz", weights)
    for name, quant in (("layers_f32", {"weight_shard_size_bytes": 2048}), ("layers_f16", {"quantization_dtype_map": {"float16": "*"}}),
                        ("layers_u8", {"quantization_dtype_map": {"uint8": "*"}}), ("layers_u16", {"quantization_dtype_map": {"uint16": "*"}})):
        tfjs.converters.save_keras_model(model, str(TFJS / name), **quant)
    saved = TFJS.parent / "tfjs_graph_source"
    tf.saved_model.save(module_model(tf), str(saved))
    tfjs.converters.convert_tf_saved_model(str(saved), str(TFJS / "graph"))
    save_npz(TFJS / "graph.npz", checkpoint_keys(tf, str(saved / "variables" / "variables")))
    shutil.rmtree(saved)
    tf.saved_model.save(model, str(saved))  # with biases: the converter fuses them (_FusedConv2D)
    tfjs.converters.convert_tf_saved_model(str(saved), str(TFJS / "graph_fused"))
    shutil.rmtree(saved)


if __name__ == "__main__":
    write_tfjs() if "--tfjs" in sys.argv else write_tensorflow()
