"""A cache as training data: samples, splits, feature statistics, windows (numpy), and the
tf.data pipeline (the only module here that imports TensorFlow). Imports `common`, `video`,
`sources`, `cache`."""
