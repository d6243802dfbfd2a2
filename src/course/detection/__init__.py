"""Object detection: boxes, IoU, NMS, VOC mAP, YOLO v1 and CenterNet (chapter 7).

Boxes are (x1, y1, x2, y2) in pixels unless a name says otherwise.
"""

from course.detection.boxes import (
    anchor_boxes,
    batched_nms,
    box_area,
    box_iou,
    clip_boxes_to_image,
    cxcywh_to_xyxy,
    nms,
    voc_to_yolo,
    xyxy_to_cxcywh,
    yolo_to_voc,
)
from course.detection.centernet import (
    CenterNet,
    CenterNetLoss,
    centernet_output_from_targets,
    decode_centernet,
    draw_gaussian,
    encode_centernet_targets,
    focal_loss,
    gaussian_radius,
)
from course.detection.draw import draw_boxes
from course.detection.metrics import voc_ap, voc_map
from course.detection.transforms import (
    BatchDetectionAugmentation,
    DetectionResize,
)
from course.detection.yolo import (
    YOLOv1,
    YOLOv1Loss,
    decode_yolo,
    encode_yolo_targets,
    yolo_output_from_targets,
)

__all__ = [
    "BatchDetectionAugmentation",
    "DetectionResize",
    "CenterNet",
    "CenterNetLoss",
    "YOLOv1",
    "YOLOv1Loss",
    "anchor_boxes",
    "batched_nms",
    "box_area",
    "box_iou",
    "centernet_output_from_targets",
    "clip_boxes_to_image",
    "cxcywh_to_xyxy",
    "decode_centernet",
    "decode_yolo",
    "draw_boxes",
    "draw_gaussian",
    "encode_centernet_targets",
    "encode_yolo_targets",
    "focal_loss",
    "gaussian_radius",
    "nms",
    "voc_ap",
    "voc_map",
    "voc_to_yolo",
    "xyxy_to_cxcywh",
    "yolo_output_from_targets",
    "yolo_to_voc",
]
