//! Links the offline engine against the system's PocketSphinx (Debian: `libpocketsphinx-dev`,
//! model in `pocketsphinx-en-us`) through pkg-config, and passes its model directory to the
//! crate as `POCKETSPHINX_MODELDIR` so the default model path follows the installation.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    if std::env::var_os("CARGO_FEATURE_POCKETSPHINX").is_none() {
        return;
    }
    match pkg_config::Config::new().probe("pocketsphinx") {
        Ok(_) => {}
        Err(e) => panic!(
            "the offline transcription engine needs PocketSphinx and its US-English model: \
             apt-get install -y libpocketsphinx-dev pocketsphinx-en-us (or build without the \
             `pocketsphinx` feature). pkg-config said: {e}"
        ),
    }
    let modeldir = pkg_config::get_variable("pocketsphinx", "modeldir")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/usr/share/pocketsphinx/model".to_string());
    println!("cargo:rustc-env=POCKETSPHINX_MODELDIR={modeldir}");
}
