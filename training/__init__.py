"""Training stage: corpora, splits, vocabulary, models, trainer, evaluation."""
