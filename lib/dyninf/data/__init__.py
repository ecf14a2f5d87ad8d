"""Data: CIFAR-10 loaded once into a cached uint8 tensor file (``cifar``) and the batches the
networks take, augmented and normalized on their device (``batches``).

May import: dyninf.utils.
"""
