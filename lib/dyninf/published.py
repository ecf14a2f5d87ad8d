"""Published figures the notebooks and the report put beside this run's numbers."""

HE_2016 = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016, Table 6"

# CIFAR ResNets (option A shortcuts): parameters and test error from the paper; MACs per 32x32
# image as commonly computed for these networks (the paper does not list them).
CIFAR_RESNETS = {
    20: {"params": 0.27e6, "macs": 41e6, "test_error": 8.75},
    32: {"params": 0.46e6, "macs": 69e6, "test_error": 7.51},
    56: {"params": 0.85e6, "macs": 125e6, "test_error": 6.97},
    110: {"params": 1.7e6, "macs": 253e6, "test_error": 6.43},
}
