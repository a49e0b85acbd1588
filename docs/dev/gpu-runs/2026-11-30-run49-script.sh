# run 49 (nvidia-h200-x2, same lease as run 48): for wd in 1 2; do flashdmoe run --preset paper-t8192-e32 --world $wd --backend cuda --back-to-back 30 --trace p$wd.json; done
