"""I3D's layout, shared by the Keras network (`i3d`) and its ONNX graph (`i3d_onnx`): the
blocks after the stem, and how a checkpoint path names a Keras layer."""

# Each block: (name, the six branch widths) of an Inception module, or (name, window,
# strides) of a max pool; in order.
BLOCKS = [
    ("MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
]


def layer_name(path: str, part: str) -> str:
    """Keras names cannot hold "/" (nor PyTorch's "."): the checkpoint's path joined by "__"."""
    return f"{path.replace('/', '__')}__{part}"
