"""The parts an update is assembled from: momentum estimators, second-moment estimators, projectors,
and the storage of state tensors."""
