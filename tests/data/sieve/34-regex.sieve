require ["fileinto", "regex", "variables"];
if header :regex "subject" "^(hel+o) (t.*)$" { fileinto "R-${2}"; }
