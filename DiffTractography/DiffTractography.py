"""DiffTractography Slicer module: GPU-batched tractography into SlicerDMRI fiber bundles.

The module is a thin shell: the node conversions, tracking, selection and clustering live in
DiffTractographyLib (``DiffTractographyLib.mrml`` is the adapter), which is tested without Slicer.
torch is imported only when tracking runs.
"""
import logging
import time
from typing import Annotated, Optional, Union

import qt
import vtk

import slicer
from slicer import (
    vtkMRMLDiffusionTensorVolumeNode,
    vtkMRMLDiffusionWeightedVolumeNode,
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLMarkupsROINode,
    vtkMRMLModelNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLVectorVolumeNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from DiffTractographyLib.config import ALGORITHMS

#: Python packages the library needs besides torch (from the PyTorch extension) and what Slicer ships.
REQUIREMENTS_FILE = "requirements.txt"
#: the torch the library needs (pyproject.toml), asked of the PyTorch extension's installer
TORCH_REQUIREMENT = ">=2.1"
#: Milliseconds a dragged seed point must rest before the interactive re-track starts.
INTERACTIVE_DELAY_MS = 30


class DiffTractography(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DiffTractography")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Diffusion.Tractography")]
        # SlicerDMRI's TractographyDisplay registers vtkMRMLFiberBundleNode and its display nodes.
        self.parent.dependencies = ["TractographyDisplay"]
        self.parent.contributors = ["DiffTractography developers"]
        self.parent.helpText = _("""
Tracks streamlines through a DWI, DTI or FOD (SH coefficients) volume from label map, segmentation,
fiducial or ROI seeds, with MRtrix3's SD_Stream and Tensor_Det or DIPY's algorithms, on the GPU when
one is present. The result is a SlicerDMRI fiber bundle (in RAS); clustering adds one bundle per
cluster. With fiducial seeds, "Update while seed points move" re-tracks a point's seeds as it is
dragged. From the Python console: <code>DiffTractographyLogic().run(inputNode, seedNode, step_size=0.5)</code>.
Documentation, measured fidelity and speed:
<a href="https://github.com/DiffTractography/SlicerDiffTractography#3d-slicer">the README</a>.
""")
        self.parent.acknowledgementText = _("""
DiffTractography reimplements MRtrix3 and DIPY tracking algorithms in PyTorch; fiber bundles are
displayed by SlicerDMRI, and torch is installed by the PyTorch extension.
""")


@parameterNodeWrapper
class DiffTractographyParameterNode:
    """What the GUI edits and the scene saves. Lengths in mm, angles in degrees; 0 for stepSize,
    maxAngle, minLength and maxLength means the algorithm's reference default; clusterThreshold 0
    means no clustering."""

    inputVolume: Optional[Union[vtkMRMLDiffusionWeightedVolumeNode, vtkMRMLDiffusionTensorVolumeNode,
                                vtkMRMLVectorVolumeNode]]
    seeds: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, vtkMRMLMarkupsFiducialNode,
                          vtkMRMLMarkupsROINode]]
    mask: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    includeRegion: Optional[Union[vtkMRMLMarkupsROINode, vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    excludeRegion: Optional[Union[vtkMRMLMarkupsROINode, vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    # vtkMRMLFiberBundleNode exists only once SlicerDMRI has loaded: the node is typed by its base class.
    outputBundle: vtkMRMLModelNode
    algorithm: Annotated[str, Choice(["auto", *ALGORITHMS])] = "auto"
    shBasis: Annotated[str, Choice(["tournier07", "descoteaux07", "descoteaux07-nonlegacy"])] = "tournier07"
    stepSize: Annotated[float, WithinRange(0.0, 10.0)] = 0.0
    maxAngle: Annotated[float, WithinRange(0.0, 90.0)] = 0.0
    cutoff: Annotated[float, WithinRange(0.0, 10.0)] = 0.1
    minLength: Annotated[float, WithinRange(0.0, 1000.0)] = 0.0
    maxLength: Annotated[float, WithinRange(0.0, 5000.0)] = 0.0
    seedsPerVoxel: Annotated[int, WithinRange(1, 1000)] = 1
    seedsPerPoint: Annotated[int, WithinRange(1, 100000)] = 100
    seedRadius: Annotated[float, WithinRange(0.0, 50.0)] = 2.5
    rngSeed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    clusterThreshold: Annotated[float, WithinRange(0.0, 100.0)] = 0.0
    minClusterSize: Annotated[int, WithinRange(1, 100000)] = 1
    # planning: on the output bundle, with the inputs above
    densityTemplate: Optional[vtkMRMLScalarVolumeNode]
    densityPrecise: bool = False
    lesion: Optional[Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]
    lesionMargin: Annotated[float, WithinRange(0.0, 100.0)] = 5.0
    splitNear: bool = False
    envelopeRepeats: Annotated[int, WithinRange(2, 1000)] = 20
    envelopeMethod: Annotated[str, Choice(["wild", "prob"])] = "wild"
    targetRegion: Optional[Union[vtkMRMLMarkupsROINode, vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode]]


class TrackingCancelled(Exception):
    """Raised from the progress callback when the user presses Cancel."""


class DiffTractographyWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._observedSeeds = None
        self._retrackTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiffTractography.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DiffTractographyLogic()

        self._retrackTimer = qt.QTimer()
        self._retrackTimer.setSingleShot(True)
        self._retrackTimer.setInterval(INTERACTIVE_DELAY_MS)
        self._retrackTimer.connect("timeout()", self.onRetrack)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.interactiveCheckBox.connect("toggled(bool)", self.onInteractiveToggled)
        self.ui.densityButton.connect("clicked(bool)", self.onDensity)
        self.ui.lesionDistanceButton.connect("clicked(bool)", self.onLesionDistance)
        self.ui.envelopeButton.connect("clicked(bool)", self.onEnvelope)
        self.ui.refineSeedsButton.connect("clicked(bool)", self.onRefineSeeds)
        self.initializeParameterNode()

    def onReload(self) -> None:
        """Developer mode's Reload: the library is read again with the module (else its old code stays)."""
        import DiffTractographyLib

        self.cleanup()
        DiffTractographyLib.unload()
        ScriptedLoadableModuleWidget.onReload(self)

    def cleanup(self) -> None:
        self._stopInteractive()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.ui.interactiveCheckBox.checked = False  # the session ends with the scene: one click restarts it
        self._stopInteractive()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLDiffusionWeightedVolumeNode")

    def setParameterNode(self, inputParameterNode: Optional[DiffTractographyParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            # connectGui sets the combo box to the parameter's type (vtkMRMLModelNode); offer fiber bundles only,
            # and show the node the parameter holds (what Apply will write), not "None" after the type change.
            self.ui.outputSelector.nodeTypes = ["vtkMRMLFiberBundleNode"]
            self.ui.outputSelector.setCurrentNode(self._parameterNode.outputBundle)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        ready = bool(self._parameterNode and self._parameterNode.inputVolume and self._parameterNode.seeds)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = _("Track streamlines") if ready else _("Select a diffusion volume and seeds")
        fiducials = ready and self._parameterNode.seeds.IsA("vtkMRMLMarkupsFiducialNode")
        self.ui.interactiveCheckBox.enabled = fiducials
        if self._observedSeeds is not None and (not fiducials or self._parameterNode.seeds != self._observedSeeds):
            self.ui.interactiveCheckBox.checked = False
        elif self._observedSeeds is not None and self.logic.interactiveOutdated(self._parameterNode):
            self._restartInteractive()  # a parameter changed during the session: track with it

        bundle = ready and self._parameterNode.outputBundle is not None
        self.ui.densityButton.enabled = bool(bundle and self._parameterNode.densityTemplate)
        self.ui.lesionDistanceButton.enabled = bool(bundle and self._parameterNode.lesion)
        self.ui.envelopeButton.enabled = ready
        self.ui.refineSeedsButton.enabled = bool(ready and self._parameterNode.targetRegion)

    def _restartInteractive(self) -> None:
        try:
            self.logic.startInteractive(self._parameterNode)
        except Exception as exc:
            self.ui.interactiveCheckBox.checked = False
            slicer.util.errorDisplay(_("Interactive seeding stopped: {cause}").format(cause=exc))
            return
        self._retrackTimer.start()

    def _runWithProgress(self, label: str, work):
        """``work(progress, notice)`` under a progress dialog with Apply and the planning buttons
        disabled; its result, or None when the dependencies are missing or the user cancelled."""
        if not ensureDependencies():
            return None
        dialog = slicer.util.createProgressDialog(labelText=label, maximum=100)
        try:
            self._setRunning(True)
            return work(self._progressCallback(dialog), self._noticeCallback(dialog))
        except TrackingCancelled:
            logging.info(f"DiffTractography: cancelled ({label})")
            return None
        finally:
            dialog.close()
            self._setRunning(False)

    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Tracking failed."), waitCursor=True):
            def track(progress, notice):
                started = time.perf_counter()
                output = self.logic.runFromParameterNode(self._parameterNode, progress=progress, notice=notice)
                return output, time.perf_counter() - started

            done = self._runWithProgress(_("Tracking..."), track)
            if done is None:
                return
            output, seconds = done
            self._parameterNode.outputBundle = output
            self.ui.statusLabel.text = _("{count} streamlines in {seconds:.1f} s").format(
                count=output.GetPolyData().GetNumberOfLines(), seconds=seconds)

    def _setRunning(self, running: bool) -> None:
        """Apply and the planning buttons are disabled while a run goes on (one run at a time)."""
        for button in (self.ui.applyButton, self.ui.densityButton, self.ui.lesionDistanceButton,
                       self.ui.envelopeButton, self.ui.refineSeedsButton):
            button.enabled = False
        if not running:
            self._checkCanApply()

    @staticmethod
    def _progressCallback(dialog):
        def report(done: int, total: int) -> None:
            dialog.value = int(100 * done / max(total, 1))
            slicer.app.processEvents()
            if dialog.wasCanceled:
                raise TrackingCancelled()
        return report

    @staticmethod
    def _noticeCallback(dialog):
        def show(message: str) -> None:
            dialog.labelText = message[:1].upper() + message[1:] + "..."
            slicer.app.processEvents()
        return show

    def onDensity(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("The density map failed."), waitCursor=True):
            node = self.logic.densityFromParameterNode(self._parameterNode)
            slicer.util.setSliceViewerLayers(foreground=node, foregroundOpacity=0.5)
            self.ui.planningStatusLabel.text = _("Density map: {name}").format(name=node.GetName())

    def onLesionDistance(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("The lesion distance failed."), waitCursor=True):
            report = self.logic.lesionDistanceFromParameterNode(self._parameterNode)
            self.ui.planningStatusLabel.text = _(
                "Nearest point {minimum:.1f} mm from the lesion (1st percentile of streamlines {robust:.1f} mm); "
                "{near} of {total} streamlines within {margin:g} mm").format(
                minimum=report.minimum, robust=report.robust, near=report.within_margin, total=report.streamlines,
                margin=report.margin)

    def onEnvelope(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("The uncertainty envelope failed."), waitCursor=True):
            done = self._runWithProgress(_("Tracking repeats..."), lambda progress, notice:
                                         self.logic.envelopeFromParameterNode(self._parameterNode, progress=progress))
            if done is None:
                return
            node, result = done
            slicer.util.setSliceViewerLayers(foreground=node, foregroundOpacity=0.5)
            self.ui.uncertaintyStatusLabel.text = self.logic.envelopeSummary(result)

    def onRefineSeeds(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Refining the seeds failed."), waitCursor=True):
            done = self._runWithProgress(_("Refining seeds..."), lambda progress, notice:
                                         self.logic.refineSeedsFromParameterNode(self._parameterNode, progress=progress))
            if done is None:
                return
            node, result = done
            self.ui.planningStatusLabel.text = _(
                "{name}: {before:.0%} -> {after:.0%} of the seeds reach the target ({tracked} streamlines tracked); "
                "track them with 1 seed per point and radius 0").format(
                name=node.GetName(), before=result.share[0], after=result.share[-1], tracked=int(result.tracked.sum()))

    def onInteractiveToggled(self, checked: bool) -> None:
        self._stopInteractive()
        if not checked:
            return
        try:
            ready = ensureDependencies()
            if ready:
                self.logic.startInteractive(self._parameterNode)
        except Exception as exc:
            ready = False
            slicer.util.errorDisplay(_("Interactive seeding could not start: {cause}").format(cause=exc))
        if not ready:
            self.ui.interactiveCheckBox.checked = False
            return
        self._observedSeeds = self._parameterNode.seeds
        for event in (slicer.vtkMRMLMarkupsNode.PointModifiedEvent, slicer.vtkMRMLMarkupsNode.PointAddedEvent,
                      slicer.vtkMRMLMarkupsNode.PointRemovedEvent):
            self.addObserver(self._observedSeeds, event, self.onSeedPointsChanged)
        self.onRetrack()

    def onSeedPointsChanged(self, caller, event) -> None:
        self._retrackTimer.start()

    def onRetrack(self) -> None:
        try:
            seconds = self.logic.retrack()
        except Exception as exc:
            self.ui.interactiveCheckBox.checked = False
            slicer.util.errorDisplay(_("Interactive re-tracking stopped: {cause}").format(cause=exc))
            return
        self._parameterNode.outputBundle = self.logic.interactiveOutput()
        self.ui.statusLabel.text = _("Re-tracked in {ms:.0f} ms").format(ms=1000 * seconds)

    def _stopInteractive(self) -> None:
        if self._retrackTimer is not None:
            self._retrackTimer.stop()
        if self._observedSeeds is not None:
            self.removeObservers(self.onSeedPointsChanged)
            self._observedSeeds = None
        if self.logic is not None:
            self.logic.stopInteractive()


def ensureDependencies(interactive: bool = True) -> bool:
    """Check torch, dipy, nibabel, numba and trx-python at first use; ask before installing anything,
    and install only what is missing. torch comes from the PyTorch extension (it picks the CUDA build
    for the driver); the others from pip, pinned so that Slicer's own numpy is never replaced.
    Returns False if declined. Not ``interactive`` (no main window to ask in): a RuntimeError that
    names what to install."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        if not interactive:
            raise RuntimeError(f"DiffTractography needs torch{TORCH_REQUIREMENT}: install the PyTorch extension "
                               "and run PyTorchUtils.PyTorchUtilsLogic().installTorch()")
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError(_("DiffTractography needs PyTorch: install the PyTorch extension from the "
                                 "Extensions Manager and restart Slicer."))
        if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                         torchVersionRequirement=TORCH_REQUIREMENT) is None:
            return False
    requirements = _requirementsPath()
    missing = _missingRequirements(requirements)
    if not missing:
        return True
    if not interactive:
        raise RuntimeError(f"DiffTractography needs these Python packages: {', '.join(missing)}; install them "
                           f"with slicer.util.pip_install({missing!r})")
    question = _("DiffTractography needs these Python packages: {names}. Install them now?")
    if not slicer.util.confirmOkCancelDisplay(question.format(names=", ".join(missing))):
        return False
    import numpy

    constraints = slicer.util.tempDirectory() + "/DiffTractography-constraints.txt"
    with open(constraints, "w") as f:
        f.write(f"numpy=={numpy.__version__}\n")
    try:
        from slicer.packaging import pip_install
    except ImportError:  # Slicer before 5.12: a plain pip call
        slicer.util.pip_install(["-c", constraints, *missing])
    else:
        pip_install(missing, constraints=constraints, requester="DiffTractography")
    return True


def _requirementsPath() -> str:
    import os

    return os.path.join(os.path.dirname(__file__), "Resources", REQUIREMENTS_FILE)


def _missingRequirements(path: str) -> list:
    """The requirement lines of ``path`` whose distribution is not installed."""
    import importlib.metadata
    import re

    missing = []
    with open(path) as f:
        for line in f:
            requirement = line.split("#", 1)[0].strip()
            if not requirement:
                continue
            name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0]
            try:
                importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                missing.append(requirement)
    return missing


class DiffTractographyLogic(ScriptedLoadableModuleLogic):
    """The scriptable API; all node work is delegated to ``DiffTractographyLib.mrml``.

    From the Python console::

        logic = DiffTractographyLogic()
        bundle = logic.run(dwiNode, seedNode, step_size=0.5, max_angle=45, seeds_per_voxel=2)
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._interactive = self._interactiveStarted = None

    def getParameterNode(self):
        return DiffTractographyParameterNode(super().getParameterNode())

    def run(self, inputNode, seedNode, outputNode=None, **parameters):
        """Track and return the output fiber bundle node; ``parameters`` as ``DiffTractographyLib.mrml.run``
        (``step_size``, ``max_angle``, ``cutoff``, ``seeds_per_voxel``, ``mask``, ``device``, ...)."""
        if not ensureDependencies(interactive=slicer.util.mainWindow() is not None):
            raise RuntimeError(_("DiffTractography's dependencies were not installed"))
        from DiffTractographyLib import mrml

        return mrml.run(slicer.mrmlScene, inputNode, seedNode, outputNode, **parameters)

    @staticmethod
    def parameters(node: DiffTractographyParameterNode) -> dict:
        """``mrml.run`` keyword arguments from the parameter node (0 -> the algorithm's default)."""
        tracking = {name: value or None for name, value in (
            ("step_size", node.stepSize), ("max_angle", node.maxAngle),
            ("min_length", node.minLength), ("max_length", node.maxLength))}
        if node.algorithm != "auto":
            tracking["algorithm"] = node.algorithm
        return dict(tracking, cutoff=node.cutoff, device=node.device, rng_seed=node.rngSeed,
                    sh_basis=node.shBasis, mask=node.mask, seeds_per_voxel=node.seedsPerVoxel,
                    seeds_per_point=node.seedsPerPoint, seed_radius=node.seedRadius,
                    include=node.includeRegion, exclude=node.excludeRegion)

    def runFromParameterNode(self, node: DiffTractographyParameterNode, progress=None, notice=None):
        return self.run(node.inputVolume, node.seeds, node.outputBundle, progress=progress, notice=notice,
                        cluster_threshold=node.clusterThreshold, min_cluster_size=node.minClusterSize,
                        **self.parameters(node))

    def densityFromParameterNode(self, node: DiffTractographyParameterNode):
        """A new volume: the output bundle's streamlines (or mm, precise) per voxel of the template."""
        from DiffTractographyLib.planning import scene

        return scene.density_node(slicer.mrmlScene, node.outputBundle, node.densityTemplate,
                                  precise=node.densityPrecise, step_size=node.stepSize or None)

    def lesionDistanceFromParameterNode(self, node: DiffTractographyParameterNode):
        """The output bundle's signed distance to the lesion (``planning.scene.LesionReport``)."""
        from DiffTractographyLib.planning import scene

        return scene.lesion_distance(slicer.mrmlScene, node.outputBundle, node.lesion, margin=node.lesionMargin,
                                     split=node.splitNear)

    def envelopeFromParameterNode(self, node: DiffTractographyParameterNode, progress=None):
        """(visitation-probability volume node, ``planning.envelope.Envelope``) of the seeds' bundle."""
        from DiffTractographyLib.planning import scene

        return scene.envelope_node(slicer.mrmlScene, node.inputVolume, node.seeds, repeats=node.envelopeRepeats,
                                   method=node.envelopeMethod, lesion=node.lesion, progress=progress,
                                   **self.parameters(node))

    @staticmethod
    def envelopeSummary(result) -> str:
        """One line: repeats, time and, with a lesion, the 5th / 50th / 95th percentiles over repeats
        of the bundle's nearest point and of its robust distance (1st percentile of streamlines)."""
        text = _("{repeats} repeats in {seconds:.1f} s").format(repeats=result.repeats,
                                                                seconds=result.seconds["total"])
        if result.percentiles:
            text += _("; distance to the lesion over repeats (5th / 50th / 95th percentile)")
            for key, what in (("minimum", _("nearest point")), ("robust", _("1st percentile of streamlines"))):
                p = result.percentiles[key]
                text += _(", {what} {p5:.1f} / {p50:.1f} / {p95:.1f} mm").format(what=what, p5=p[5.0], p50=p[50.0],
                                                                                p95=p[95.0])
        return text

    def refineSeedsFromParameterNode(self, node: DiffTractographyParameterNode, progress=None):
        """(new fiducial node, ``planning.seeds.SeedResult``): the seeds moved toward the target region."""
        from DiffTractographyLib.planning import scene

        options = self.parameters(node)
        options.pop("include")  # the seeds' streamlines must reach the target region instead
        exclude = options.pop("exclude")
        return scene.refine_seeds(slicer.mrmlScene, node.inputVolume, node.seeds, node.targetRegion, exclude,
                                  progress=progress, **options)

    def startInteractive(self, node: DiffTractographyParameterNode) -> None:
        """Prepare interactive re-tracking of the fiducial seeds of ``node`` (field kept on the device)."""
        from DiffTractographyLib import mrml

        options = self._interactiveOptions(node)
        self._interactive = mrml.InteractiveSeeding(slicer.mrmlScene, node.inputVolume, node.seeds,
                                                    node.outputBundle, **options)
        self._interactiveStarted = (node.inputVolume, options)

    def _interactiveOptions(self, node: DiffTractographyParameterNode) -> dict:
        options = self.parameters(node)
        options.pop("seeds_per_voxel")
        return options

    def interactiveOutdated(self, node: DiffTractographyParameterNode) -> bool:
        """Whether ``node``'s input or tracking parameters differ from those the session started with."""
        return self._interactive is not None and (node.inputVolume, self._interactiveOptions(node)) != \
            self._interactiveStarted

    def retrack(self) -> float:
        """Re-track the seed points that moved; returns the seconds from call to new polydata."""
        started = time.perf_counter()
        count = self._interactive.update()
        seconds = time.perf_counter() - started
        logging.info(f"DiffTractography: re-tracked {count} seed point(s) in {1000 * seconds:.0f} ms")
        return seconds

    def interactiveOutput(self):
        return self._interactive.outputNode if self._interactive else None

    def stopInteractive(self) -> None:
        self._interactive = self._interactiveStarted = None


class DiffTractographyTest(ScriptedLoadableModuleTest):
    """In-app test: a synthetic DWI node, tracked from fiducial seeds into a fiber bundle node. It
    never installs anything: without torch or the other requirements (an Extensions Index build
    machine) it says so and passes."""

    SEEDS = 1000

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        import importlib.util

        missing = ([] if importlib.util.find_spec("torch") else ["torch"]) + _missingRequirements(_requirementsPath())
        if missing:
            self.delayDisplay(f"DiffTractography self-test skipped: {', '.join(missing)} not installed")
            return
        self.setUp()
        self.test_TrackSyntheticDWI()
        self.setUp()
        self.test_InteractiveRetrack()
        self.setUp()
        self.test_PlanningOnTheBundle()

    def _syntheticInputs(self):
        """A 24 x 12 x 12 (2 mm) DWI with one fibre direction along x everywhere, and a fiducial at the centre."""
        import numpy as np

        from DiffTractographyLib import mrml

        tensors = np.zeros((24, 12, 12, 3, 3))
        tensors[...] = np.diag([1.7e-3, 0.3e-3, 0.3e-3])
        signal = mrml.dwi_from_tensors(tensors, np.diag([2.0, 2.0, 2.0, 1.0]))
        dwi = mrml.dwi_node(slicer.mrmlScene, signal, "SyntheticDWI")
        seeds = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "Seeds")
        seeds.AddControlPoint([23.0, 11.0, 11.0])
        return dwi, seeds

    def test_TrackSyntheticDWI(self):
        self.delayDisplay("Tracking a synthetic DWI")
        dwi, seeds = self._syntheticInputs()
        bundle = DiffTractographyLogic().run(dwi, seeds, seeds_per_point=self.SEEDS, seed_radius=2.0, device="cpu")
        self.assertTrue(bundle.IsA("vtkMRMLFiberBundleNode"))
        polydata = bundle.GetPolyData()
        self.assertEqual(polydata.GetNumberOfLines(), self.SEEDS)  # the field is uniform: no seed stops early
        bounds, volume = [0.0] * 6, [0.0] * 6
        polydata.GetBounds(bounds)
        dwi.GetRASBounds(volume)
        for axis in range(3):  # every point inside the image (RAS bounds, half a voxel of slack)
            self.assertGreaterEqual(bounds[2 * axis], volume[2 * axis] - 1.0)
            self.assertLessEqual(bounds[2 * axis + 1], volume[2 * axis + 1] + 1.0)
        self.assertGreater(bounds[1] - bounds[0], 30.0)  # streamlines run along x, the fibre direction
        tensors = polydata.GetPointData().GetArray("tensor")  # per point, 9 components: SlicerDMRI's glyphs
        self.assertIsNotNone(tensors)
        self.assertEqual((tensors.GetNumberOfTuples(), tensors.GetNumberOfComponents()),
                         (polydata.GetNumberOfPoints(), 9))
        self.assertGreaterEqual(bundle.GetNumberOfDisplayNodes(), 1)
        self.delayDisplay("Test passed")

    def test_InteractiveRetrack(self):
        self.delayDisplay("Interactive re-tracking")
        dwi, seeds = self._syntheticInputs()
        logic = DiffTractographyLogic()
        parameters = logic.getParameterNode()
        parameters.inputVolume, parameters.seeds = dwi, seeds
        parameters.seedsPerPoint, parameters.seedRadius, parameters.device = self.SEEDS, 2.0, "cpu"
        logic.startInteractive(parameters)
        logic.retrack()
        seeds.SetNthControlPointPosition(0, 25.0, 11.0, 11.0)
        seconds = logic.retrack()
        logging.info(f"DiffTractography self-test: interactive re-track of {self.SEEDS} seeds on CPU "
                     f"took {1000 * seconds:.0f} ms")
        self.assertEqual(logic.interactiveOutput().GetPolyData().GetNumberOfLines(), self.SEEDS)
        self.delayDisplay("Test passed")

    def test_PlanningOnTheBundle(self):
        self.delayDisplay("Density map and distance to a lesion")
        import numpy as np

        from DiffTractographyLib import mrml

        dwi, seeds = self._syntheticInputs()
        logic = DiffTractographyLogic()
        parameters = logic.getParameterNode()
        parameters.inputVolume, parameters.seeds = dwi, seeds
        parameters.seedsPerPoint, parameters.seedRadius, parameters.device = 200, 2.0, "cpu"
        parameters.outputBundle = logic.runFromParameterNode(parameters)
        lesion = np.zeros((24, 12, 12), np.uint8)
        lesion[20:22, 5:7, 5:7] = 1  # 2 voxels (4 mm) wide, on the fibres' path
        parameters.lesion = mrml.volume_node(slicer.mrmlScene, lesion, np.diag([2.0, 2.0, 2.0, 1.0]),
                                             "vtkMRMLLabelMapVolumeNode", "Lesion")
        parameters.densityTemplate = dwi
        density, grid = mrml.volume_arrays(logic.densityFromParameterNode(parameters))
        self.assertEqual(density.shape, (24, 12, 12))  # on the template's grid
        self.assertTrue(np.allclose(grid, mrml.node_affine(dwi)))
        self.assertGreaterEqual(density.max(), 40)  # 56 headless: the 200 streamlines share a few voxel rows
        report = logic.lesionDistanceFromParameterNode(parameters)
        self.assertLess(report.minimum, 0.0)  # streamlines run through the lesion (-1.86 mm headless)
        self.assertEqual((report.streamlines, report.within_margin), (200, 200))
        distances = parameters.outputBundle.GetPolyData().GetPointData().GetArray("lesion_distance")
        self.assertEqual(distances.GetNumberOfTuples(), parameters.outputBundle.GetPolyData().GetNumberOfPoints())
        self.delayDisplay("Test passed")
