"""The `gesture-cache` command: the parser, one function a command, tables, and the demo.
Parses arguments and calls the stages; no logic of its own."""
