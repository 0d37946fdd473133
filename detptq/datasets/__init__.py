from . import demo_data  # noqa: F401  (generated demo data set)
from . import transforms  # noqa: F401  (registers YOLOLetterbox)
from . import rect_batches  # noqa: F401  (official rect evaluation batches)
from . import image_folder  # noqa: F401  (registers ImageFolderDataset)
