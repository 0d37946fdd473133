from setuptools import find_packages, setup


def read_version() -> str:
    scope: dict = {}
    with open('detptq/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='detptq',
    version=read_version(),
    description='Post-training quantization (BRECQ/QDrop/DetPTQ) for YOLO '
    'detectors as an OpenMMLab plugin',
    packages=find_packages(include=['detptq', 'detptq.*']),
    python_requires='>=3.9',
    # torch and mmcv are deliberately not listed: tools/install_deps.sh installs
    # them (torch only if missing, mmcv built from source); see README.
    install_requires=['mmengine==0.10.7', 'mmdet==3.3.0', 'pycocotools',
                      'numpy', 'tqdm'],
)
