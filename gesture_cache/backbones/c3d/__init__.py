"""C3D Sports-1M (Tran et al., 2015) as a backbone: `options` (its settings and the seed
recipe), `preprocessing`, `network` (Keras, Keras-2 weights), `onnx_graph` (a bundle's graph),
`backbone` (what the extractor runs). Importing the package imports nothing heavy."""
