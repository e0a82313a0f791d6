#!/usr/bin/env bash
# Optional system tools used by tests when present: DICOM validator (dciodvfy),
# DCMTK (dcm2pnm, storescu), poppler (pdftoppm, pdftotext), the Orthanc DICOM server and its
# DICOMweb and web viewer plugins and headless Chromium (the PACS and reader-study tests start their own instance on loopback ports), the libraries Qt
# needs offscreen, every library Qt 6's X11 (xcb) platform plugin loads (without them `make run`
# aborts on a fresh machine; p2p_desktop/gui/platform_check.py names the same packages), and
# Xvfb + xdotool for the test that opens the real window on the xcb platform.
# Best effort: the suite skips the checks whose tools are missing, naming the tool (tests/tools.py).
set -u
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  need=()
  command -v dciodvfy >/dev/null || need+=(dicom3tools)
  command -v dcm2pnm  >/dev/null || need+=(dcmtk)
  { command -v pdftoppm >/dev/null && command -v pdftotext >/dev/null; } || need+=(poppler-utils)
  command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ] || need+=(orthanc)
  [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
  # the reader-study test opens exported DICOMs in Orthanc's web viewer in headless Chromium
  [ -f /usr/share/orthanc/plugins/libOrthancWebViewer.so ] || need+=(orthanc-webviewer)
  command -v chromium >/dev/null || need+=(chromium)
  command -v Xvfb     >/dev/null || need+=(xvfb)
  command -v xdotool  >/dev/null || need+=(xdotool)
  for lib in libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 \
             libx11-xcb1 libxcb1 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 \
             libxcb-randr0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-cursor0 \
             libxcb-xfixes0 libxcb-shm0 libxcb-sync1 libxcb-render0 libxcb-util1; do
    dpkg -s "$lib" >/dev/null 2>&1 || need+=("$lib")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || \
      echo "warning: could not install ${need[*]}; tests needing them will be skipped" >&2
  fi
fi
exit 0
