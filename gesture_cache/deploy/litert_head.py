"""A run's head as LiteRT: the same weights in a model that converts with builtin operators.

The rolled LSTM converts to Flex TensorList ops that neither LiteRT nor TensorFlow >= 2.20
runs, so the recurrent layers are unrolled. Keras' own unrolled backward layer gets masked
sequences wrong (keras-team/keras#17596: with `go_backwards`, `unroll=True` and a mask, the
outputs it returns for the valid clips are zeros), which a head with one recurrent layer never
shows but a stacked one does (top class 75-83 % at LiteRT parity). So each direction is a
forward layer here: the backward one reads each window's valid clips in reverse order (the
padding stays where it is, at the end) and its outputs are put back in clip order.
"""

from __future__ import annotations

from pathlib import Path

import keras

from gesture_cache.common.errors import RunError


def reversed_valid(x, lengths):
    """(batch, T, D) with each row's first `length` steps in reverse order, the rest kept."""
    ops = keras.ops
    steps = ops.expand_dims(ops.arange(x.shape[1], dtype="int32"), 0)
    lengths = ops.expand_dims(lengths, 1)
    backwards = ops.subtract(ops.subtract(lengths, 1), steps)
    order = ops.where(ops.less(steps, lengths), backwards, steps)
    return ops.take_along_axis(x, ops.expand_dims(order, -1), axis=1)


def unrolled_head(model: keras.Model) -> keras.Model:
    """The head of `model` (a `train.model.build_classifier` model) unrolled over its window,
    every weight copied: same inputs, same outputs."""
    layers = {layer.name: layer for layer in model.layers}
    copies: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def copied(layer: keras.layers.Layer, **changes) -> keras.layers.Layer:
        twin = type(layer).from_config({**layer.get_config(), **changes, "name": None})
        copies.append((twin, layer))
        return twin

    features = keras.Input(tuple(model.inputs[0].shape[1:]), name="features")
    mask = keras.Input(tuple(model.inputs[1].shape[1:]), dtype="bool", name="mask")
    x = features
    for name in ("standardize", "reduce"):  # fixed layers before the recurrent ones
        if name in layers:
            x = copied(layers[name])(x)
    lengths = keras.ops.sum(keras.ops.cast(mask, "int32"), axis=1)
    recurrent = [layer for layer in model.layers if isinstance(layer, keras.layers.Bidirectional)]
    for bidirectional in recurrent:
        forward = copied(bidirectional.forward_layer, unroll=True)
        backward = copied(bidirectional.backward_layer, unroll=True, go_backwards=False)
        ahead = forward(x, mask=mask)
        behind = backward(reversed_valid(x, lengths), mask=mask)
        if bidirectional.return_sequences:
            behind = reversed_valid(behind, lengths)
        x = keras.ops.concatenate([ahead, behind], axis=-1)
    for name in ("dense", "classes"):
        if name in layers:
            x = copied(layers[name])(x)
    unrolled = keras.Model([features, mask], x, name=f"{model.name}_unrolled")
    for twin, layer in copies:  # built now, by the calls above
        twin.set_weights(layer.get_weights())
    return unrolled


def export_litert_head(model: keras.Model, path: Path, quantize: str | None) -> None:
    """The unrolled head as a .tflite file, builtin operators only: a head that would need
    Flex ops fails here instead of shipping."""
    import tensorflow as tf

    unrolled = unrolled_head(model)
    target = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    options = {}
    if quantize:
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        target["supported_types"] = [tf.float16]
    try:
        unrolled.export(str(path), format="litert", verbose=False, target_spec=target, **options)
    except Exception as error:  # noqa: BLE001 - the converter raises its own kinds
        raise RunError(
            f"the LiteRT head does not convert with builtin operators only: "
            f"{str(error).splitlines()[0][:300]}"
        ) from None
