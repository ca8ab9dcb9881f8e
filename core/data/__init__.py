"""Image data sets: built-ins, uploads, validation."""
from core.data.builtin import BUILTIN_SIZES, BUILTINS, builtin_side, load_dataset, small_builtin
from core.data.dataset import DataError, ImageDataset
from core.data.limits import UploadLimits
from core.data.upload import read_upload, save_upload

__all__ = ["BUILTIN_SIZES", "BUILTINS", "DataError", "ImageDataset", "UploadLimits", "builtin_side", "load_dataset", "read_upload",
           "save_upload", "small_builtin"]
