"""Training: the recipe on sentence-transformers' trainer, and tracked train-and-evaluate runs."""

from hcae.training.recipe import TrainingDiverged, copy_teacher_embeddings, train
from hcae.training.runner import metrics_from_results, run_tracked, train_and_evaluate

__all__ = ["TrainingDiverged", "copy_teacher_embeddings", "metrics_from_results", "run_tracked", "train", "train_and_evaluate"]
