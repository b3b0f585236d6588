"""Evaluation: COCO AP and AP50 by OVD split, LVIS APr/APc/APf, region classification, the recorded protocol."""
