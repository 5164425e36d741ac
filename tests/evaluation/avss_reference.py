"""An independent implementation of the official AVSS metric, written from its definition with plain loops.

Definition (AVSBench ``avs_scripts/avss/utils/compute_color_metrics.py`` and ``test.py``): per frame and
class k, I = #(pred = gt = k), P = #(pred = k), G = #(gt = k), U = P + G - I; IoU = I / (U + 2.220446049250313e-16);
F = 1.3 p r / (0.3 p + r) with p = I / P, r = I / G, and 0 whenever that is undefined (I = 0 makes it 0 / 0
or 0 / nan); the class counts in the frame when U > 0. Per class: sum over frames / frames counted, 0 when
never counted. mIoU / F: mean over all K classes.
"""


def reference_avss(preds, gts, num_classes):
    """preds, gts: lists of 2-D integer arrays (one per scored frame). Returns (mIoU, F, per-class IoU,
    per-class F, per-class counted frames, per-class ground-truth frames)."""
    iou_sum = [0.0] * num_classes
    f_sum = [0.0] * num_classes
    counted = [0] * num_classes
    gt_frames = [0] * num_classes
    for pred, gt in zip(preds, gts):
        pred_list = [int(v) for v in pred.reshape(-1)]
        gt_list = [int(v) for v in gt.reshape(-1)]
        for k in range(num_classes):
            i = sum(1 for a, b in zip(pred_list, gt_list) if a == k and b == k)
            p = sum(1 for a in pred_list if a == k)
            g = sum(1 for b in gt_list if b == k)
            u = p + g - i
            iou_sum[k] += i / (u + 2.220446049250313e-16)
            if i > 0:
                prec, rec = i / p, i / g
                f_sum[k] += 1.3 * prec * rec / (0.3 * prec + rec)
            if u > 0:
                counted[k] += 1
            if g > 0:
                gt_frames[k] += 1
    iou_c = [iou_sum[k] / counted[k] if counted[k] else 0.0 for k in range(num_classes)]
    f_c = [f_sum[k] / counted[k] if counted[k] else 0.0 for k in range(num_classes)]
    return sum(iou_c) / num_classes, sum(f_c) / num_classes, iou_c, f_c, counted, gt_frames
