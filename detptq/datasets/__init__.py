from . import demo_data  # noqa: F401  (generated demo data set)
from . import transforms  # noqa: F401  (registers YOLOLetterbox)
from . import image_folder  # noqa: F401  (registers ImageFolderDataset)
