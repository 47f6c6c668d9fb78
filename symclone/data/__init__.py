"""Datasets: orbit triples, Fashion-MNIST/MNIST, Gaussian images, point clouds."""
from ._images import (FASHION_MNIST_DIRS, DatasetMissingError, GaussianImages, RandomPointClouds,
                      find_fashion_mnist, load_fashion_mnist, load_image_dataset, load_mnist, read_idx)
from ._orbit import OrbitDataset

__all__ = ["OrbitDataset", "GaussianImages", "RandomPointClouds", "load_fashion_mnist", "load_mnist",
           "load_image_dataset", "find_fashion_mnist", "read_idx", "FASHION_MNIST_DIRS",
           "DatasetMissingError"]
