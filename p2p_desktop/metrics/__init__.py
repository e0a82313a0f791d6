"""Metrics: image similarity (:mod:`.similarity`), FID (:mod:`.fid`), perturbation maps
(:mod:`.perturbation`) and the metric table every report reads (:mod:`.table`)."""

from p2p_desktop.metrics.similarity import (
    ALEXNET_FILE,
    METRIC_PROTOCOLS,
    lpips_distance,
    lpips_net,
    lpips_status,
    paper_metrics,
    paper_view,
    psnr,
    ssim,
    ssim_paper,
)
from p2p_desktop.metrics.table import METRICS, Metric, compute_metrics, format_value, image_metrics, metric

__all__ = ["compute_metrics", "ssim", "psnr", "lpips_status", "lpips_distance", "lpips_net", "ALEXNET_FILE",
           "METRIC_PROTOCOLS", "paper_view", "ssim_paper", "paper_metrics", "METRICS", "Metric", "format_value",
           "image_metrics", "metric"]
