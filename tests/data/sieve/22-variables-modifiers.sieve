require ["fileinto", "variables"];
set :upperfirst :lower "name" "mIXED";
set :length "len" "abcdef";
fileinto "${name}${len}";
