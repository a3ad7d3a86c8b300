//! The few functions of PocketSphinx 5prealpha and SphinxBase that the offline engine calls,
//! declared by hand.
//!
//! # Why no crate
//! The bindings on crates.io (`pocketsphinx-sys` 0.5 and `pocketsphinx` 0.6) were last
//! released in 2016, are Rust 2015, target the 0.8-era API and are unmaintained; `bindgen`
//! would add libclang to every build for ten functions. Debian ships 5prealpha
//! (`0.8+5prealpha+1`), whose API is the one below: `cmd_ln_*` configuration, `ps_init`,
//! `ps_start_utt`, `ps_process_raw`, `ps_end_utt`, `ps_seg_iter(ps)` (without the score
//! argument of 0.8). The 5.x releases (`ps_config_init`, ...) differ and are not packaged.
//! The declarations were checked against `/usr/include/pocketsphinx/pocketsphinx.h` and
//! `/usr/include/x86_64-linux-gnu/sphinxbase/{cmd_ln,err,logmath}.h` of that version.

use std::ffi::{c_char, c_int, c_void};

/// `cmd_ln_t`, `ps_decoder_t`, `ps_seg_t`, `logmath_t`, `arg_t`: opaque to us.
#[repr(C)]
pub struct CmdLn {
    _private: [u8; 0],
}
#[repr(C)]
pub struct Decoder {
    _private: [u8; 0],
}
#[repr(C)]
pub struct Seg {
    _private: [u8; 0],
}
#[repr(C)]
pub struct LogMath {
    _private: [u8; 0],
}
#[repr(C)]
pub struct Arg {
    _private: [u8; 0],
}

#[link(name = "pocketsphinx")]
extern "C" {
    pub fn ps_args() -> *const Arg;
    pub fn ps_init(config: *mut CmdLn) -> *mut Decoder;
    pub fn ps_free(ps: *mut Decoder) -> c_int;
    pub fn ps_start_utt(ps: *mut Decoder) -> c_int;
    pub fn ps_process_raw(
        ps: *mut Decoder,
        data: *const i16,
        n_samples: usize,
        no_search: c_int,
        full_utt: c_int,
    ) -> c_int;
    pub fn ps_end_utt(ps: *mut Decoder) -> c_int;
    pub fn ps_seg_iter(ps: *mut Decoder) -> *mut Seg;
    pub fn ps_seg_next(seg: *mut Seg) -> *mut Seg;
    pub fn ps_seg_word(seg: *mut Seg) -> *const c_char;
    pub fn ps_seg_frames(seg: *mut Seg, out_sf: *mut c_int, out_ef: *mut c_int);
    pub fn ps_seg_prob(
        seg: *mut Seg,
        out_ascr: *mut i32,
        out_lscr: *mut i32,
        out_lback: *mut i32,
    ) -> i32;
    pub fn ps_get_logmath(ps: *mut Decoder) -> *mut LogMath;
}

#[link(name = "sphinxbase")]
extern "C" {
    /// Parses `argv[1..argc]` as `-name value` pairs (argv[0] is the program name).
    pub fn cmd_ln_parse_r(
        inout_cmdln: *mut CmdLn,
        defn: *const Arg,
        argc: i32,
        argv: *mut *mut c_char,
        strict: c_int,
    ) -> *mut CmdLn;
    pub fn cmd_ln_free_r(cmdln: *mut CmdLn) -> c_int;
    /// `FILE *` or NULL: NULL disables SphinxBase's logging (process-wide).
    pub fn err_set_logfp(stream: *mut c_void);
    pub fn logmath_exp(lmath: *mut LogMath, logb_p: c_int) -> f64;
}
