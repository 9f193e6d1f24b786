# One-step setup for Windows (PowerShell), then run one job:
#   powershell -ExecutionPolicy Bypass -File setup.ps1 demo   -> set up, then `vjbridge demo`
#   powershell -ExecutionPolicy Bypass -File setup.ps1 test   -> set up, then the test suite
# Needs Python 3.10+ from python.org (the `py` launcher). PyAudio, PyAV and cyndilib ship wheels
# with PortAudio, FFmpeg and NDI inside, so nothing else is installed system-wide.
param([string]$Job = "none")
$ErrorActionPreference = "Stop"
Set-Location $PSScriptRoot
$venv = if ($env:VJBRIDGE_VENV) { $env:VJBRIDGE_VENV } else { ".venv" }
if (-not (Test-Path "$venv\Scripts\python.exe")) { py -3 -m venv $venv }
$py = "$venv\Scripts\python.exe"
& $py -m pip install -q --upgrade pip
& $py -c "import torch" 2>$null
if ($LASTEXITCODE -ne 0) { & $py -m pip install -q torch }
# export: ONNX Runtime, which plays most models 1.1-1.9x faster than traced where torch cannot
# compile (no cl.exe on PATH, the usual case), and runs --runtime int8
$extras = if ($Job -eq "test") { "ndi,preview,spout,train,export,test" } else { "ndi,preview,spout,export" }
& $py -m pip install -q -e ".[$extras]"
if (-not (Get-Command cl.exe -ErrorAction SilentlyContinue)) {
  Write-Output ("note: no cl.exe on PATH, so models play uncompiled (ONNX Runtime or traced, 1.1-3x slower than compiled). For full speed " +
    "install Visual Studio Build Tools ('Desktop development with C++') and start vjbridge from the " +
    "'x64 Native Tools Command Prompt'; vjbridge doctor checks it.")
}
switch ($Job) {
  "demo" { & "$venv\Scripts\vjbridge.exe" demo; exit $LASTEXITCODE }
  "test" { & $py -m pytest -q -p no:cacheprovider -m "not soak" tests; exit $LASTEXITCODE }
  "none" { Write-Output "set up in $venv; try: $venv\Scripts\vjbridge.exe --help" }
  default { Write-Error "unknown job '$Job' (use demo or test)"; exit 2 }
}
