"""The CNN side of featurize: image decoding, the models, what runs them, and the
workers' loop (pure functions and classes; Spark only in the job)."""
