"""What every stage shares: the errors the CLI prints as one line, hashing and atomic
writes that never follow a link out of a folder, locks, Ctrl-C handling, the ONNX builder.
Imports nothing of the package."""
