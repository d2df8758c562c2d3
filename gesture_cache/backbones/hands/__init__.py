"""MediaPipe's hand landmarks as a backbone: `options`, `models` (the .tflite files: found,
installed, checked), `palm` (palm detection), `tracker` (the landmark model, frame to frame),
`backbone` (the feature vector a frame), `view` (the `hands` command). Importing the package
imports nothing heavy."""
