from setuptools import find_packages, setup

# torch, openmm and the openmm-torch plugin must share one libtorch ABI: these three pins are a set
# that was tested together on CPU (conda users: see environment.yml, which installs with --no-deps).
PINNED = ["torch==2.12.1", "openmm==8.6.1", "acellera-openmmtorch-cpu==1.10"]

setup(
    name="openmm_smoothflow",
    version="0.1.0",
    description="Smooth normalizing flows (Boltzmann generators) as OpenMM potentials",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["openmm_smoothflow", "openmm_smoothflow.*"]),
    package_data={"openmm_smoothflow": ["data/*.pdb", "data/*.pt", "data/*.md", "data/*.json", "data/*.npz"]},
    install_requires=PINNED + ["numpy", "mdtraj", "matplotlib", "tqdm"],
    extras_require={"test": ["pytest", "openmmml==1.8"]},
    entry_points={
        "console_scripts": ["smoothflow = openmm_smoothflow.cli:main"],
        "openmmml.potentials": ["smoothflow = openmm_smoothflow.mlpotential:SmoothFlowPotentialImplFactory"],
    },
)
