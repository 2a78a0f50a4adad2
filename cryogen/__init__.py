"""CryoGEN: unsupervised MAP restoration of cryo-electron tomograms under a learned energy prior."""

__version__ = "0.1.0"
