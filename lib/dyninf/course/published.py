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

# Huang et al., Deep Networks with Stochastic Depth, ECCV 2016; figures from the official code's
# README (ResNet-110 on CIFAR-10, 500 epochs): test error 6.41% (constant depth) vs 5.23%
# (stochastic depth, p_L = 0.5), about 75 s vs 60 s per epoch on the authors' GPU.
STOCHASTIC_DEPTH = {
    "accuracy_plain": 100 - 6.41,
    "accuracy_sd": 100 - 5.23,
    "setting": "Huang et al. 2016 (official code): ResNet-110, all of CIFAR-10, 500 epochs",
    "seconds_per_epoch_plain": 75,
    "seconds_per_epoch_sd": 60,
    "time_source": "Huang et al. 2016 (official code), ResNet-110 on the authors' GPU",
}

VEIT_2016 = "Veit et al., Residual Networks Behave Like Ensembles of Relatively Shallow Networks, NeurIPS 2016"

# Veit & Belongie, Convolutional Networks with Adaptive Inference Graphs, ECCV 2018, CIFAR-10:
# ConvNet-AIG 110 (t = 0.7) beats ResNet-110 while executing about 82% of its layers; the gates
# add about 0.01% FLOPs and 4.8% parameters to ResNet-110 (as quoted, not checked against the paper
# here). The gate the paper describes, built here (dyninf.deciders.aig.Gate), adds 2.0% parameters
# to ResNet-110 and 0.013% MACs: notebook 02 shows both and says the parameter share is the paper's.
AIG = {
    "setting": "Veit & Belongie 2018: ConvNet-AIG 110, all of CIFAR-10, 350 epochs",
    "executed_fraction": 0.82,
    "gate_macs_percent": 0.01,
    "gate_params_percent": 4.8,
}

# Chen, Li, Bengio & Si, You Look Twice: GaterNet for Dynamic Filter Selection in CNNs, CVPR 2019
# (figures as quoted in the course's issue #5, not checked against the paper here): on ResNet-164,
# 1,567 input-dependent gates (443 of those almost always or almost never open), 5,380-5,506 open
# per image; GaterNet beats every plain ResNet it gates; on CIFAR-100, 1.83 points lower error than
# ResNet-164. The quoted total of 7,200 gates is left out: neither natural choice of the
# bottleneck ResNet-164's filters gives it (its inner filters are 4,032, all its convolutions'
# outputs 12,096), so it is not put beside this course's gate counts.
GATERNET = {
    "setting": "Chen et al. 2019: GaterNet (ResNet-20 gater), CIFAR-10/100; beats the plain ResNets",
    "input_dependent_resnet164": 1567,
    "extreme_input_dependent_resnet164": 443,
    "open_per_image_resnet164": (5380, 5506),
    "cifar100_error_reduction_vs_resnet164": 1.83,
}

# Wu, Nagarajan et al., BlockDrop: Dynamic Inference Paths in Residual Networks, CVPR 2018; figures
# from the official code's README (ResNet-110 on CIFAR-10, curriculum then joint finetuning with
# gamma = 10): 93.6% accuracy using 16.9 +- 3.7 of 54 blocks, 1.81e8 FLOPs per image, 469 unique
# policies on the test set. Those FLOPs fit 2 FLOPs per MAC: 16.9 / 54 of ResNet-110's 253 M MACs
# plus a ResNet-8 policy is about 0.9e8 MACs.
BLOCKDROP = {
    "setting": "Wu et al. 2018 (official code): ResNet-110 finetuned, all of CIFAR-10, gamma 10",
    "accuracy": 93.6,
    "blocks_used": 16.9,
    "blocks_used_std": 3.7,
    "num_blocks": 54,
    "macs": 1.81e8 / 2,
    "unique_policies": 469,
}
