"""Where recordings come from: the meta CSV and its checks, importers of datasets as they ship
(Jester, IPN Hand, class folders), and synthetic gesture videos. Imports `common`, `video`."""
