"""Datasets, transforms and samplers: COCO-format detection sets, the COCO OVD and LVIS splits."""
