"""Where every loss and phase setting the presets use comes from: the value the presets
run, the published value and its source (a paper's section, or repository@commit:path of
the reference code the paper builds on), and for each deliberate difference, why.

Keys are "<loss>.<field>" for a loss's settings (the weight included) and "<setting>" for
a phase's own. `value` is what every preset uses, or where presets differ a map from
"<preset>/<mode>", "*/<mode>", "<preset>" or "*" (looked up in that order) to the value, or
to a map from the phase ("phase1", ...) to it.
tests/test_sources.py walks every preset, mode and phase and fails on a setting that is
not here or whose value differs from the one recorded.

The reference code, read at these commits (2026-12-06):
- threestudio:  threestudio-project/threestudio@28d9d80d9d00f308244adfcf3be8b17ca0cb6465
- Consistent3D: sail-sg/Consistent3D@9118a5cc8ba4d16aa1c092301aedffb68c31f18e (threestudio based)
- HiFA:         JunzheJosephZhu/HiFA@d0213bcbdfcbe6181ed1960f6b0a8b72dd7909a4 (stable-dreamfusion based;
                threestudio's configs/hifa.yaml is threestudio's re-implementation of it)
- Magic123:     guochengqian/Magic123@11b72ac581c8525a74f7ef1a5749f10f74358320
- Zero-1-to-3:  cvlab-columbia/zero123@f426883b1a7353d91ddc34a551dd91b6223e4ce8
- LucidDreamer: EnVision-Research/LucidDreamer@2ecf0936617103107e4b20c34e94d204196f7a44
- nvdiffrec:    NVlabs/nvdiffrec@38adb2048da358a1ccdd32a99b4a66fbbe51cdb5
- Text2Mesh:    threedle/text2mesh@004d637c2fa10b5ac89075898f0af4980f5e4099
- ImageReward:  THUDM/ImageReward@1beb4e4de0932acbe7fc090c51208048b6269b58
XBind's and TV-3DG's own code is not public (TV-3DG's repository yjhboy/TV-3DG@947e016
holds a README only): their settings come from the papers (shared/papers).
CFG scales are written in our form ε_u + s (ε_c - ε_u); threestudio and Consistent3D write
ε_c + s (ε_c - ε_u), so their 100 is our 101, a 1% difference kept for the round number.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import TimestepSchedule


@dataclass(frozen=True)
class Source:
    value: Any  # what the presets run, or {"<preset>[/<mode>]" | "*": value}
    published: str  # the published value(s)
    where: str  # paper section or repository:path (commits above)
    why: str = ""  # for a deliberate difference: why, and what was measured

    def expected(self, preset: str, mode: str, phase: str) -> Any:
        """The value recorded for a preset in a mode, in a phase."""
        value = self.value
        if isinstance(value, dict):
            key = next((k for k in (f"{preset}/{mode}", f"*/{mode}", preset, "*") if k in value), None)
            if key is None:
                raise KeyError(f"no value recorded for {preset}/{mode}")
            value = value[key]
        return value[phase] if isinstance(value, dict) else value


_TS = "threestudio/models/guidance/stable_diffusion_guidance.py"
_C3D = "Consistent3D threestudio/models/guidance/stable_diffusion_guidance.py"
_UNMEASURABLE = ("not measurable here: the oracle stands one exact target in for every model, so it cannot weigh "
                 "one prior against another")

_DUAL = ("0 at draft (generate and edit): its phase II is dual contouring, whose edges these terms hold round; "
         "the oracle ring on a stick's own-box Chamfer gap 0.37 points with draft's weights, 0.056 without "
         "(docs/quality.md, \"A surface that can hold an edge\"); against the real models' noise not measured")

SOURCES: dict[str, Source] = {
    # --- augmented SDS (XBind Eq. 4-8) on Stable unCLIP --------------------------------
    "aug_sds.weight": Source(1.0, "λ_sds 1", "threestudio configs/hifa.yaml L77 (lambda_sds: 1.)"),
    "aug_sds.guidance_scale": Source(
        (100.0, 100.0), "100", "threestudio configs/hifa.yaml L63, dreamfusion-sd.yaml L73; HiFA main.py L30; "
        "DreamFusion Sec. 3 (ω = 100)"),
    "aug_sds.image_weight": Source(
        {"*/edit": 0.0, "standard": 0.01, "high": 0.01, "*": 0.0}, "λ_sds_img 0.01 with the √ᾱ/√(1-ᾱ) factor",
        f"threestudio configs/hifa.yaml L78; {_TS} L273-277 (grad_img = w (image - image_denoised) alpha / sigma)",
        "draft and the edit mode run plain SDS: the image term needs a second decode each step (TAESD), and "
        "draft's 128² renders are the fast preview; HiFA's own code uses 0.1 in x0 form (main.py L145)"),
    "aug_sds.image_decoder": Source(
        "tiny", "the SD VAE decoder", f"{_TS} decode_latents L170-184",
        "TAESD (madebyollin/taesd, the same latent space) at 1/17 of the VAE decoder's work for four 768² views; "
        "\"vae\" restores the reference's decoder (tests/test_unclip.py checks the term through either)"),
    "aug_sds.max_resolution": Source(
        512, "512 (renders resized to 512², latents 64²)", f"{_TS} L401-403; HiFA main.py L63 (--interp_size 512)",
        "the reference resizes to 512² for every Stable Diffusion; unCLIP-H trained at 768² "
        "(v2-1-stable-unclip-h-inference.yaml image_size 96) is encoded at 512² too; 768 restores its size"),
    # --- CDS (XBind Eq. 3, Consistent3D) ------------------------------------------------
    "cds.weight": Source(1.0, "λ_sds 1", "Consistent3D configs/consistency-refine.yaml (loss.lambda_sds)"),
    "cds.guidance_scale": Source(
        (100.0, 30.0), "[0, 100., 30., 3000]: linear 100 -> 30 over the refine stage",
        f"Consistent3D configs/consistency-refine.yaml L70; {_C3D} update_step L902"),
    "cds.max_resolution": Source(512, "512", f"{_C3D} L560-570 (rgb resized to 512²)",
                                 "as aug_sds.max_resolution"),
    "cds.gap": Source((100, 200), "t1 - t2 ~ randint(end_gap, end_gap + perturb_factor) = [100, 200), per view",
                      f"Consistent3D configs/consistency-refine.yaml L81-82; {_C3D} L577"),
    "cds.max_t": Source(0.5, "max_sigma_percent 0.5: t1 <= 500, t2 <= 400",
                        f"Consistent3D configs/consistency-refine.yaml L72-73; {_C3D} L576-580"),
    "cds.grad_clip": Source((2.0, 8.0), "[0, 2.0, 8.0, 3000]: linear 2 -> 8",
                            f"Consistent3D configs/consistency-refine.yaml L78; {_C3D} L397-398"),
    # --- CSM / VPCSM (TV-3DG Eq. 9, 15-18) ----------------------------------------------
    "csm.weight": Source(1.0, "1", "TV-3DG Sec. IV-A (one 2D term)"),
    "csm.scale": Source(7.5, "λ = 7.5", "TV-3DG Sec. IV-A Implementation Details"),
    "csm.delta_t": Source(50, "δt = 50", "TV-3DG Sec. IV-A"),
    "csm.warmup": Source(1 / 3, "W = 1/3 of the iterations", "TV-3DG Sec. IV-A",
                         "Sec. IV-D also says W = 1/5 gives more coherent textures; IV-A's setting is kept"),
    "vpcsm.weight": Source(1.0, "1", "TV-3DG Sec. IV-A"),
    "vpcsm.scale": Source(7.5, "λ = 7.5", "TV-3DG Sec. IV-A"),
    "vpcsm.delta_t": Source(50, "δt = 50", "TV-3DG Sec. IV-A"),
    "vpcsm.warmup": Source(1 / 3, "W = 1/3", "TV-3DG Sec. IV-A"),
    "vpcsm.ip_scale": Source(0.5, "τ = 0.5", "TV-3DG Sec. IV-A"),
    "vpcsm.pag_scale": Source(1.0, "s = 1", "TV-3DG Sec. IV-A"),
    "vpcsm.fixed_views": Source(True, "four views (front, right, back, left) each step", "TV-3DG Sec. III-C"),
    # --- Zero-1-to-3 SDS (XBind Eq. 10) -------------------------------------------------
    "zero123_sds.weight": Source(
        1.0, "the 3D prior at 40x the 2D prior (λ_sd 0.025 : λ_3d_sd 1)",
        "Magic123 scripts/magic123/run_both_priors.sh L49 (--lambda_guidance 1.0 40); threestudio "
        "configs/magic123-coarse-sd.yaml L114-115",
        "XBind gives no relative weights and Magic123's pair sets its 2D prior's scale and window too; ours keep "
        f"the 2D and 3D priors at 1 : 1 with the reference view at 1000 (threestudio's rgb : 3D ratio); {_UNMEASURABLE}"),
    "zero123_sds.guidance_scale": Source(
        (5.0, 5.0), "5", "Magic123 scripts/magic123/run_both_priors.sh L50 (--guidance_scale 100 5); threestudio "
        "configs/magic123-coarse-sd.yaml L82"),
    "zero123_sds.timesteps": Source(
        TimestepSchedule(0.2, 0.6, "random"), "t ~ U[0.2, 0.6]",
        "Magic123 main.py L264-265 (--t_range 0.2 0.6); threestudio configs/magic123-coarse-sd.yaml L83-84"),
    # --- reference view (XBind Eq. 11) and the edit modes' identity anchor ---------------
    "ref_view.weight": Source(
        1000.0, "λ_rgb 1000, λ_mask 100 (MSE to rgb·m + bg(1-m), BCE on opacity)",
        "threestudio configs/magic123-coarse-sd.yaml L112-113, systems/magic123.py L60-73 (rgb_weight 1, "
        "mask_weight 0.1 in guidance/ref_view.py make 1000 / 100)"),
    "identity.weight": Source(
        10.0, "none (Conjure's own anchor for stylize / edit)", "presets/modes/edit.json",
        "the reference-view loss over K views of the input mesh; its weight is how much an edit may change, "
        "measured on the edit end-to-end test (tests/test_modes_e2e.py)"),
    # --- MS loss (XBind Eq. 2) ----------------------------------------------------------
    "ms.weight": Source(1.0, "none (XBind names ω_ms, gives no value)", "XBind Sec. IV-A", "1, as every 2D term"),
    "ms.omega_g": Source(1.0, "none", "XBind Sec. IV-A (ω_g, ω_l, ω_z named, no values)",
                         "equal weights; Text2Mesh, the nearest published design, weighs its views equally"),
    "ms.omega_l": Source(1.0, "none", "XBind Sec. IV-A", "as ms.omega_g"),
    "ms.omega_z": Source(1.0, "none", "XBind Sec. IV-A", "as ms.omega_g"),
    "ms.aug_weights": Source((1.0,), "n augmentations, W_i: none given",
                             "XBind Sec. IV-A; Text2Mesh run_vase.sh (--n_augs 1, --n_normaugs 4)",
                             "one augmentation of each kind per iteration: each costs a ViT-H pass"),
    "ms.distortion": Source(0.5, "RandomPerspective(distortion_scale=0.5, p=0.8)",
                            "Text2Mesh main.py (XBind's ref. [15])",
                            "applied every time (XBind: G applies a random perspective, no probability)"),
    "ms.crop_scale": Source((0.5, 0.9), "RandomResizedCrop area 0.1 (side 0.32)", "Text2Mesh main.py, run_vase.sh",
                            "Text2Mesh crops local detail of one mesh at 224²; a 128-512² render cropped to a third "
                            "of its side loses the object's identity CLIP compares with C_m"),
    "ms.recompute": Source({"draft": True, "*": False}, "none (memory, not maths)", "guidance/ms.py",
                           "true: backward recomputes the ViT (-2.4 GB at standard); the presets that run MS keep it"),
    # --- SGC (TV-3DG Eq. 10-13) ---------------------------------------------------------
    "sgc.weight": Source(1.0, "1", "TV-3DG Sec. IV-A"),
    "sgc.reward": Source({"*": 2.5, "high": {"phase2": 0.0, "phase3": 2.5}}, "λ_i = 2.5", "TV-3DG Sec. IV-A",
                         "off in phase II, which renders normal maps (no colours to reward)"),
    "sgc.semantic": Source({"*": 4.0, "high": {"phase2": 0.0, "phase3": 4.0}}, "λ_2 = 4", "TV-3DG Sec. IV-A",
                           "off in phase II (normal maps)"),
    "sgc.depth": Source({"*": 1.0, "high": {"phase2": 1.0, "phase3": 0.0}}, "λ_1 = 1", "TV-3DG Sec. IV-A",
                        "off in phase III, whose geometry is frozen"),
    "sgc.normal": Source({"*": 1.0, "high": {"phase2": 1.0, "phase3": 0.0}}, "λ_1 = 1", "TV-3DG Sec. IV-A",
                         "off in phase III"),
    "sgc.reward_margin": Source(
        25.0, "ImageReward through ReFL's ϕ(r) = relu(2 - r) (ImageReward's standardised units)",
        "TV-3DG Eq. 10 (ImageReward); ImageReward ImageReward/ReFL.py",
        "PickScore stands in for ImageReward (whose package pins transformers < 4.56); 25 in PickScore's units of "
        "100 cos is about where its scores of matching images sit"),
    "sgc.resolution": Source(256, "none", "TV-3DG (not given)", "Zero-1-to-3's own 256² output size"),
    "sgc.guidance_scale": Source(3.0, "3", "Zero-1-to-3 gradio_new.py L315 (scale 3)",
                                 "TV-3DG makes its multi-view targets with ImageDream; Zero-1-to-3 stands in"),
    "sgc.steps": Source(50, "50 DDIM steps, eta 1", "Zero-1-to-3 gradio_new.py L315",
                        "deterministic DDIM (eta 0): the targets are made once a job and stay reproducible"),
    # --- regularisers -------------------------------------------------------------------
    "z_variance.weight": Source(
        {"standard": 100.0, "high": 100.0, "*": 0.0}, "λ_z_variance 100 (mean over rays with opacity > 0.5)",
        "threestudio configs/hifa.yaml L82, systems/dreamfusion.py L73-77",
        "off at draft (a preview preset; not measured)"),
    "orientation.weight": Source({"standard": 0.01, "high": 0.01, "*": 0.0}, "λ_orient 0.01",
                                 "Magic123 main.py L274", "off at draft (its phase I renders albedo only; not measured)"),
    "normal_consistency.weight": Source(
        {"draft": 0.0, "*": 100.0}, "100", "Consistent3D configs/consistency-refine.yaml L93",
        "ours compares face normals across an edge where threestudio's mesh.py compares vertex normals; kept at "
        "standard and high (marching tets), the two were not compared. " + _DUAL),
    "laplacian.weight": Source(
        {"*/stylize": 100.0, "draft": 0.0, "*": 1000.0}, "100 (mean ‖(D - A) v‖, not squared, not divided by the degree)",
        "Consistent3D configs/consistency-refine.yaml L94; threestudio models/mesh.py L276-309",
        "ours is the mean squared distance to the neighbours' mean (geometry/regularizers.py), a different "
        "scale, so the weight does not transfer; 1000 is kept: the oracle end-to-end targets meet their bars with "
        "it (tests/test_oracle_e2e.py); stylize's optional phase II 100. " + _DUAL),
    "sdf_entropy.weight": Source({"standard": 0.01, "high": 0.01, "*": 0.0}, "0.01 (its end value)",
                                 "nvdiffrec geometry/dmtet.py tick() (sdf_regularizer dropping off to 0.01)",
                                 "off at draft (not measured)"),
    "tie.weight": Source(1000.0, "none (stylize's own: offsets tied to the input surface)",
                         "presets/modes/stylize.json", "keeps restyling from moving the input geometry"),
    # --- phases -------------------------------------------------------------------------
    "timesteps": Source(
        {"*": {"phase1": TimestepSchedule(0.3, 0.98, "sqrt"), "phase2": TimestepSchedule(0.02, 0.3, "sqrt"),
               "phase3": TimestepSchedule(0.02, 0.98, "sqrt")},
         "draft": {"phase1": TimestepSchedule(0.02, 0.98, "sqrt"), "phase2": TimestepSchedule(0.02, 0.3, "sqrt"),
                   "phase3": TimestepSchedule(0.02, 0.98, "sqrt")}},
        "phase I: HiFA's sqrt anneal 0.98 -> 0.3; phase II (CDS's t2): 300 -> 20 sqrt; phase III: 0.98 -> 0.02",
        "threestudio configs/hifa.yaml L65-67 (min_step_percent 0.3, sqrt_anneal); Consistent3D "
        "configs/consistency-refine.yaml L77, L80 (cur_steps [0, 300, 20, 3000], perturb_indices sqrt); "
        "threestudio configs/magic3d-refine-sd.yaml (texture stage 0.02 - 0.98)",
        "draft's phase I anneals down to 0.02: at its 300 steps a 0.3 floor leaves the hand-over's flat faces "
        "too far out; measured with the oracle (2026-12-06, 2-core CPU, blocks at "
        "the end-to-end test's sizes): the exported file 2.4% of the diagonal outside the target's box at 0.3, "
        "1.2% at 0.02, the same Chamfer (0.55% / 0.56%)"),
    "weighting": Source("sds", "w(t) = 1 - ᾱ", "threestudio configs/hifa.yaml L64; " + _TS + " L255-257"),
    "optimizer": Source({"*": {"phase1": "adam", "phase2": "adan", "phase3": "adam"}, "*/stylize":
                         {"phase1": "adam", "phase2": "adam", "phase3": "adam"}},
                        "Adam / Adan / Adam", "XBind Sec. V-A2",
                        "stylize's optional phase II moves vertex offsets: plain Adam at a small rate"),
    "lr": Source({"*": {"phase1": 0.01, "phase2": 0.01, "phase3": 0.001},
                  "draft": {"phase1": 0.01, "phase2": 0.01, "phase3": 0.01},
                  "*/edit": {"phase1": 0.01, "phase2": 0.05, "phase3": 0.001},
                  "draft/edit": {"phase1": 0.01, "phase2": 0.05, "phase3": 0.01},
                  "*/stylize": {"phase1": 0.01, "phase2": 0.0005, "phase3": 0.001},
                  "draft/stylize": {"phase1": 0.01, "phase2": 0.0005, "phase3": 0.01}},
                 "0.01 / 0.01 / 0.001", "XBind Sec. V-A2",
                 "draft's texture phase at 0.01: 300 steps instead of 1500; edit's phase II at 0.05 moves an "
                 "existing surface; stylize's phase II only nudges it"),
}


def settings_of(loss: str, config: Any) -> dict[str, Any]:
    """A loss config's fields by their table key (<loss>.<field>)."""
    from dataclasses import fields

    return {f"{loss}.{f.name}": getattr(config, f.name) for f in fields(config)}
