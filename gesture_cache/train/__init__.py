"""Training: the settings, preparing the data (one owner), the model presets, fit and its
callbacks, metrics, the run folder, the runs table, plots and the hyperparameter search.
Imports the stages below it; `run_folder`, `runs`, `model` and `config` are what readers of
a trained run may use."""
