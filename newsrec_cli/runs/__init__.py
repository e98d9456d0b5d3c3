"""The run folder owns a trained run on disk: its file names, config.json, vocabularies and data context, checkpoints, history records, and loading a run back (`loading.load_run`)."""
